import VirtioLinux
import VirtioLock
import VirtioProvisioning
import VirtioSpec

#if canImport(Glibc)
import Glibc
#endif

/// The service's Unix socket: `udev-event` writes one event line and reads one answer line
/// (`ok …` or `error …`).
public enum ServiceSocket {
    /// A `sockaddr_un` for `path`, or nil when the path does not fit.
    static func address(_ path: String) -> sockaddr_un? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        return address
    }

    /// Hands `event` to the service listening on `path`; its answer, or nil when none listens.
    public static func send(_ event: UdevEvent, to path: String) -> String? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard var address = address(path) else { return nil }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return nil }
        writeAll(fd, event.wireLine + "\n")
        let text = readLine(fd, limit: 4096)
        return text.isEmpty ? "error the service closed the connection without answering" : text
    }

    /// Binds and listens on `path` (mode 0600, its directory created).
    public static func listen(at path: String) throws(VirtioAdminError) -> Int32 {
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex { mkdir(String(path[..<slash]), 0o700) }
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .transport(pf: .init(domain: 0, bus: 0, device: 0, function: 0), "socket() failed: \(systemErrorText(errno)).") }
        guard var address = address(path) else {
            close(fd)
            throw .transport(pf: .init(domain: 0, bus: 0, device: 0, function: 0), "socket path \(path) is too long.")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 1024) == 0 else {
            let code = errno
            close(fd)
            throw .transport(pf: .init(domain: 0, bus: 0, device: 0, function: 0), "cannot listen on \(path): \(systemErrorText(code)).")
        }
        chmod(path, 0o600)
        return fd
    }

    static func writeAll(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let result = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + sent, $0.count - sent) }
            if result < 0 && errno == EINTR { continue }
            if result <= 0 { return }
            sent += result
        }
    }

    /// One newline-terminated line (at most about `limit` bytes), without the newline.
    public static func readLine(_ fd: Int32, limit: Int) -> String {
        var bytes = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 1024)
        while bytes.count < limit {
            let got = read(fd, &buffer, buffer.count)
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            bytes += buffer[0..<got]
            if bytes.last == 0x0a { break }
        }
        while let last = bytes.last, last == 0x0a || last == 0x0d { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Runs `body` on a thread of its own (blocking accept and udev reads stay off the
/// cooperative pool, which has only as many threads as cores).
func runOnThread(_ body: @escaping @Sendable () -> Void) {
    final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { argument in
        let box = Unmanaged<AnyObject>.fromOpaque(argument!).takeRetainedValue() as! Box
        box.body()
        return nil
    }, box)
    precondition(result == 0, "pthread_create failed: \(result)")
    pthread_detach(thread)
}

/// A stop request that threads and tasks can both see.
public final class StopFlag: @unchecked Sendable {
    let lock = Lock()
    var stopped = false
    public init() {}
    public func stop() { lock.withLock { stopped = true } }
    public var isStopped: Bool { lock.withLock { stopped } }
}

extension ProvisioningService {
    /// Serves events until `stop` is set or `maxEvents` were handled: from clients on the
    /// listening socket `listener` (each answered with its own VF's outcome), and, when
    /// `monitor` is given, from udev itself. Events are handled concurrently; those for one
    /// PF are coalesced into batches on its admin queue. On return everything in flight has
    /// finished and every PF's queue is closed (state saved).
    public func serve(listener: Int32, monitor: UdevMonitor? = nil, maxEvents: Int? = nil, stop: StopFlag) async {
        let counter = Lock()
        nonisolated(unsafe) var handled = 0
        @Sendable func count() {
            counter.withLock {
                handled += 1
                if let maxEvents, handled >= maxEvents { stop.stop() }
            }
        }
        let box = TaskList()
        await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
            let threads = ThreadCount(2 - (monitor == nil ? 1 : 0), finished)
            runOnThread { [self] in
                while !stop.isStopped {
                    var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                    let ready = poll(&poller, 1, 100)
                    if ready <= 0 { continue }
                    let client = accept(listener, nil, nil)
                    if client < 0 { continue }
                    var limit = timeval(tv_sec: 5, tv_usec: 0)
                    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
                    let line = ServiceSocket.readLine(client, limit: 4096)
                    count()
                    box.add(Task {
                        let reply: String
                        do {
                            let event = try UdevEvent(environment: UdevEvent.environment(fromWire: line))
                            let outcome = await self.handle(event)
                            reply = (outcome.succeeded ? "ok " : "error ") + outcome.summary
                        } catch {
                            self.logger.error("\(error)")
                            reply = "error \(error)"
                        }
                        ServiceSocket.writeAll(client, reply + "\n")
                        close(client)
                    })
                }
                threads.done()
            }
            if let monitor {
                runOnThread { [self] in
                    while !stop.isStopped {
                        guard let hotplug = monitor.next(timeoutMilliseconds: 100) else { continue }
                        var environment = ["ACTION": hotplug.action, "SUBSYSTEM": "pci", "DEVPATH": hotplug.devpath, "PCI_SLOT_NAME": hotplug.address.description]
                        if let vendor = hotplug.vendorID, let device = hotplug.deviceID {
                            environment["PCI_ID"] = String(hex(vendor, width: 4).dropFirst(2)) + ":" + String(hex(device, width: 4).dropFirst(2))
                        }
                        guard let event = try? UdevEvent(environment: environment) else { continue }
                        count()
                        box.add(Task {
                            let outcome = await self.handle(event)
                            self.logger.info("udev event \(event.action.rawValue) \(event.address): \(outcome.summary)")
                        })
                    }
                    threads.done()
                }
            }
        }
        for task in box.all() { await task.value }
        await shutDown()
    }
}

/// Tasks started by the serving threads (awaited before shutting down).
final class TaskList: @unchecked Sendable {
    let lock = Lock()
    var tasks: [Task<Void, Never>] = []
    func add(_ task: Task<Void, Never>) { lock.withLock { tasks.append(task) } }
    func all() -> [Task<Void, Never>] { lock.withLock { tasks } }
}

/// Resumes a continuation when the last of N threads is done.
final class ThreadCount: @unchecked Sendable {
    let lock = Lock()
    var remaining: Int
    let continuation: CheckedContinuation<Void, Never>
    init(_ count: Int, _ continuation: CheckedContinuation<Void, Never>) {
        remaining = count
        self.continuation = continuation
    }
    func done() {
        let last = lock.withLock { () -> Bool in
            remaining -= 1
            return remaining == 0
        }
        if last { continuation.resume() }
    }
}
