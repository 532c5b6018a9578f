import VirtioLinux
import VirtioSystem
import VirtioProvisioning
import VirtioSpec

/// The service's Unix socket: `udev-event` writes one event line and reads one answer line
/// (`ok …` or `error …`).
package enum ServiceSocket {
    /// Hands `event` to the service listening on `path`; its answer, or nil when none
    /// listens or it closed the connection without answering (a service that is stopping),
    /// so that the caller falls back to doing the work itself. An answer takes at most
    /// `timeout` (udev gives an event 180 s).
    package static func send(_ event: UdevEvent, to path: String, timeout: Duration = .seconds(120)) -> String? {
        guard let fd = try? UnixSocket.connect(to: path, receiveTimeout: timeout) else { return nil }
        defer { UnixSocket.close(fd) }
        writeAll(fd, event.wireLine + "\n")
        let text = readLine(fd, limit: 4096)
        return text.isEmpty ? nil : text
    }

    /// Binds and listens on `path` (mode 0600, its directory created).
    package static func listen(at path: String) throws(VirtioAdminError) -> Int32 {
        do { return try UnixSocket.listen(at: path) } catch { throw .system(error) }
    }

    static func writeAll(_ fd: Int32, _ text: String) {
        UnixSocket.sendAll(fd, Array(text.utf8))
    }

    /// One newline-terminated line (at most about `limit` bytes), without the newline.
    package static func readLine(_ fd: Int32, limit: Int) -> String {
        UnixSocket.readLine(fd, limit: limit)
    }
}

/// A stop request that threads and tasks can both see.
package final class StopFlag: @unchecked Sendable {
    let lock = Lock()
    var stopped = false
    package init() {}
    package func stop() { lock.withLock { stopped = true } }
    package var isStopped: Bool { lock.withLock { stopped } }
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
    package func serve(listener: Int32, socketPath: String? = nil, monitor: UdevMonitor? = nil, readyFile: String? = nil,
                      maxEvents: Int? = nil, stop: StopFlag) async {
        // Every client is an open socket until its answer: room for thousands at once, made
        // now (not while a burst of events is being accepted), and a part kept for the work.
        let descriptors = Sys.reserveFileDescriptors(Self.descriptorsWanted, duplicating: listener) - Sys.openDescriptorCount()
        let clients = ClientSlots(limit: Self.clientLimit(descriptors: descriptors))
        if clients.limit < Self.clientLimit(descriptors: Self.descriptorsWanted / 2) {
            logger.warning("the open-file limit lets the service hold \(clients.limit) clients at once; more wait in the listen backlog (raise LimitNOFILE to \(Self.descriptorsWanted) or more)")
        }
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
            Sys.makeParentDirectory(of: readyFile, permissions: [.ownerReadWriteExecute, .groupRead, .groupExecute, .otherRead, .otherExecute])
            do { try Sys.writeSmallFile(readyFile, "\(Sys.processID)\n", create: true) } catch {
                logger.warning("\(error); the udev rule will still run helpers for VF events")
            }
        }
        await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
            let threads = ThreadCount(monitor == nil ? 1 : 2, finished)
            startThread { [self] in
                var outOfDescriptors = false
                while !stop.isStopped {
                    // Clients beyond the limit wait in the listen backlog until answers free room.
                    guard clients.waitForRoom(milliseconds: 100), Sys.poll(listener, timeoutMilliseconds: 100) else { continue }
                    let client: Int32
                    switch UnixSocket.accept(listener) {
                    case .success(let fd):
                        client = fd
                        outOfDescriptors = false
                    case .failure(let code):
                        // Out of descriptors all the same (another part of the process, or the
                        // system, holds them): wait for some to be freed rather than spin on a
                        // listener that stays readable; said once until a client is taken again.
                        if [.tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory].contains(code) {
                            if !outOfDescriptors { self.logger.warning("cannot take clients now (accept: \(code)); trying every 10 ms") }
                            outOfDescriptors = true
                            Sys.sleepMilliseconds(10)
                        }
                        continue
                    }
                    clients.enter()
                    UnixSocket.setReceiveTimeout(client, .seconds(5))
                    let line = ServiceSocket.readLine(client, limit: 4096)
                    count()
                    inFlight.enter()
                    @Sendable func answer(_ reply: String) {
                        ServiceSocket.writeAll(client, reply + "\n")
                        UnixSocket.close(client)
                        clients.leave()
                        inFlight.leave()
                    }
                    let event: UdevEvent
                    do { event = try UdevEvent(environment: UdevEvent.environment(fromWire: line)) } catch {
                        self.logger.error("\(error)")
                        answer("error \(error)")
                        continue
                    }
                    // Answered on whichever thread finishes the event's work.
                    self.handle(event) { outcome in answer((outcome.succeeded ? "ok " : "error ") + outcome.summary) }
                }
                // Stop taking clients at once: those still connecting fall back.
                if let socketPath { Sys.unlink(socketPath) }
                UnixSocket.close(listener)
                threads.done()
            }
            if let monitor {
                startThread { [self] in
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
                    if let readyFile { Sys.unlink(readyFile) }
                    threads.done()
                }
            }
        }
        await inFlight.waitUntilIdle()
        await shutDown()
    }
}

extension ProvisioningService {
    /// Open descriptors the service makes room for when it starts serving.
    static let descriptorsWanted = 4096

    /// How many clients the service holds at once when the process may open `descriptors`
    /// more: all but an eighth of them (at least 32), which are left for the work — state
    /// files, sysfs attributes, `drivers_probe`, each PF's lock and VFIO descriptors.
    static func clientLimit(descriptors: Int) -> Int {
        max(1, descriptors - max(32, descriptors / 8))
    }
}

/// The clients the service holds (each an open socket until its answer), at most `limit`.
/// Only the socket thread enters; answers, on any thread, leave.
final class ClientSlots: @unchecked Sendable {
    let limit: Int
    let condition = ConditionLock()
    var held = 0

    init(limit: Int) { self.limit = limit }

    /// Whether fewer than `limit` clients are held, waiting at most `milliseconds` for one to leave.
    func waitForRoom(milliseconds: Int) -> Bool {
        condition.withLock {
            let deadline = monotonicNanoseconds() &+ UInt64(milliseconds) * 1_000_000
            while held >= limit && monotonicNanoseconds() < deadline { condition.wait(untilMonotonicNanoseconds: deadline) }
            return held < limit
        }
    }

    func enter() { condition.withLock { held += 1 } }

    func leave() {
        condition.withLock {
            held -= 1
            condition.signal()
        }
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
