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

    /// Hands `event` to the service listening on `path`; its answer, or nil when none
    /// listens or it closed the connection without answering (a service that is stopping),
    /// so that the caller falls back to doing the work itself. An answer takes at most
    /// `timeout` (udev gives an event 180 s).
    public static func send(_ event: UdevEvent, to path: String, timeout: Duration = .seconds(120)) -> String? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // The whole timeout, microseconds too (a sub-second timeout of 0 s would mean "no timeout").
        let microseconds = max(1, timeout.nanoseconds / 1000)
        var limit = timeval(tv_sec: Int(microseconds / 1_000_000), tv_usec: Int(microseconds % 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        guard var address = address(path) else { return nil }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return nil }
        writeAll(fd, event.wireLine + "\n")
        let text = readLine(fd, limit: 4096)
        return text.isEmpty ? nil : text
    }

    /// Binds and listens on `path` (mode 0600, its directory created).
    public static func listen(at path: String) throws(VirtioAdminError) -> Int32 {
        makeParentDirectory(of: path, mode: 0o700)
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
            // MSG_NOSIGNAL: a client that went away is an error here, not SIGPIPE.
            let result = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
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
    /// PF are coalesced into batches on its admin queue. As soon as it stops it closes the
    /// listener (and unlinks `socketPath`, when given), so clients fall back to doing the work
    /// themselves; on return everything in flight has finished and every PF's queue is closed
    /// (state saved). `readyFile` exists while the monitor listens (the udev rule then runs
    /// no helper for VF events).
    public func serve(listener: Int32, socketPath: String? = nil, monitor: UdevMonitor? = nil, readyFile: String? = nil,
                      maxEvents: Int? = nil, stop: StopFlag) async {
        let inFlight = InFlightCount()
        let counter = Lock()
        nonisolated(unsafe) var handled = 0
        @Sendable func count() {
            counter.withLock {
                handled += 1
                if let maxEvents, handled >= maxEvents { stop.stop() }
            }
        }
        if monitor != nil, let readyFile {
            makeParentDirectory(of: readyFile, mode: 0o755)
            let code = writeSmallFile(readyFile, "\(getpid())\n", create: true)
            if code != 0 { logger.warning("cannot write \(readyFile): \(systemErrorText(code)); the udev rule will still run helpers for VF events") }
        }
        await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
            let threads = ThreadCount(monitor == nil ? 1 : 2, finished)
            runOnThread { [self] in
                while !stop.isStopped {
                    var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                    if poll(&poller, 1, 100) <= 0 { continue }
                    let client = accept(listener, nil, nil)
                    if client < 0 { continue }
                    var limit = timeval(tv_sec: 5, tv_usec: 0)
                    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
                    let line = ServiceSocket.readLine(client, limit: 4096)
                    count()
                    inFlight.enter()
                    Task {
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
                        inFlight.leave()
                    }
                }
                // Stop taking clients at once: those still connecting fall back.
                if let socketPath { unlink(socketPath) }
                close(listener)
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
                        let event: UdevEvent
                        do { event = try UdevEvent(environment: environment) } catch {
                            self.logger.warning("udev event dropped: \(error)")
                            continue
                        }
                        count()
                        inFlight.enter()
                        Task {
                            let outcome = await self.handle(event)
                            self.logger.info("udev event \(event.action.rawValue) \(event.address): \(outcome.summary)")
                            inFlight.leave()
                        }
                    }
                    if let readyFile { unlink(readyFile) }
                    threads.done()
                }
            }
        }
        await inFlight.waitUntilIdle()
        await shutDown()
    }
}

/// Events being handled (waited for before shutting down).
final class InFlightCount: @unchecked Sendable {
    let lock = Lock()
    var count = 0
    var idleWaiters: [CheckedContinuation<Void, Never>] = []
    func enter() { lock.withLock { count += 1 } }
    func leave() {
        let waiters = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            count -= 1
            guard count == 0 else { return [] }
            defer { idleWaiters = [] }
            return idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }
    var value: Int { lock.withLock { count } }
    /// Returns once no event is being handled.
    func waitUntilIdle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = lock.withLock { () -> Bool in
                if count == 0 { return true }
                idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }
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
