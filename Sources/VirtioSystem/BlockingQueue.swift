import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs blocking calls (a sysfs write the kernel probes a driver in) on at most
/// ``maxThreads`` threads of its own, in the order they came, without holding a thread of
/// the Swift concurrency pool. A thread is started when a call comes and none is free, and
/// ends when no call waits: a thousand calls at once cost a few threads, not one each (the
/// service's `drivers_probe` writes used to start a thread per event, and those threads
/// contended on the one file). Each thread opens a `Resource` when it starts and closes it
/// when it ends, so the calls one thread runs in a row share it (one open file for many
/// writes).
package final class BlockingQueue<Resource>: @unchecked Sendable {
    /// How many calls run at once, at most.
    package let maxThreads: Int
    let lock = Lock()
    // Guarded by `lock`: the waiting calls from `head` on, threads running, the peaks.
    var jobs: [@Sendable (Resource) -> Void] = []
    var head = 0
    var running = 0
    var started = 0
    var busy = 0
    var peakBusy = 0

    let open: @Sendable () -> Resource
    let close: @Sendable (Resource) -> Void

    /// A queue running at most `maxThreads` (at least one) calls at once; each of its threads
    /// calls `open` when it starts and `close` when it ends.
    package init(maxThreads: Int, open: @escaping @Sendable () -> Resource, close: @escaping @Sendable (Resource) -> Void) {
        self.maxThreads = max(1, maxThreads)
        self.open = open
        self.close = close
    }

    /// Runs `body` on a thread of the queue, with that thread's resource, and returns its value.
    package func run<T: Sendable>(_ body: @escaping @Sendable (Resource) -> T) async -> T {
        await withCheckedContinuation { continuation in
            submit { continuation.resume(returning: body($0)) }
        }
    }

    /// Threads the queue has started so far.
    package var threadsStarted: Int { lock.withLock { started } }
    /// The most calls that ran at once so far.
    package var peakConcurrency: Int { lock.withLock { peakBusy } }

    /// Runs `job` on a thread of the queue, with that thread's resource.
    package func submit(_ job: @escaping @Sendable (Resource) -> Void) {
        let startThread = lock.withLock { () -> Bool in
            jobs.append(job)
            guard running < maxThreads else { return false }
            running += 1
            started += 1
            return true
        }
        guard startThread else { return }
        if let thread = makeThread({ self.drain() }) { pthread_detach(thread) } else { drain() }
    }

    /// Runs waiting calls until none is left, then lets the thread end.
    func drain() {
        let resource = open()
        while let job = next() {
            job(resource)
            lock.withLock { busy -= 1 }
        }
        close(resource)
    }

    func next() -> (@Sendable (Resource) -> Void)? {
        lock.withLock {
            guard head < jobs.count else {
                running -= 1
                return nil
            }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            busy += 1
            peakBusy = max(peakBusy, busy)
            return job
        }
    }
}

extension BlockingQueue where Resource == Void {
    /// A queue running at most `maxThreads` (at least one) calls at once.
    package convenience init(maxThreads: Int) {
        self.init(maxThreads: maxThreads, open: {}, close: { _ in })
    }
}

/// A sysfs attribute held open for many writes (`drivers_probe` for a run of VFs): each
/// ``write(_:)`` is one `write(2)` at offset 0, which the kernel takes as one store of the
/// attribute. The file is never truncated: a regular file standing in for the attribute
/// (the device model's sysfs view) then shows the last value written, without the
/// journal flush ext4 does on closing a truncated file (about 1 ms a write here).
package struct AttributeFile: Sendable {
    /// The attribute's path.
    package let path: String
    let opened: Result<FileDescriptor, SystemCallError>

    /// Opens `path` for writing (an error shows at each write).
    package init(path: String) {
        self.path = path
        do throws(SystemCallError) { opened = .success(try Sys.open(path, .writeOnly)) } catch { opened = .failure(error) }
    }

    /// Stores `text` (one write at offset 0).
    package func write(_ text: String) throws(SystemCallError) {
        let fd = try opened.get()
        let bytes = Array(text.utf8)
        let written = try naming("write", path) { try bytes.withUnsafeBytes { try fd.write(toAbsoluteOffset: 0, $0, retryOnInterrupt: true) } }
        if written != bytes.count { throw SystemCallError(call: "write", path: path, errno: .ioError) }
    }

    /// Closes the file.
    package func close() {
        if case .success(let fd) = opened { Sys.close(fd) }
    }
}
