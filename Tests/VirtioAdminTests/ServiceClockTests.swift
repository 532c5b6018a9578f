import Logging
import PCIConfig
import ResourceManager
import Testing
@testable import VirtioAdmin
import VirtioAdminTestKit
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec
import VirtioSystem
import VirtioTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The waits of the service, the helper and the CLI's lock go by an injected clock: these
/// tests move a manual clock on instead of waiting (nothing here sleeps for the timeouts).
@Suite(.timeLimit(.minutes(1))) struct ServiceClockTests {
    static let pf = PCIAddress("0000:3b:00.0")!
    static let policyText = """
        [[pf]]
        match = { address = "0000:3b:00.0" }
          [[pf.vf]]
          vfs = "all"
          msix-vectors = 4
        """

    /// A simulated PF in a state file (so that its opener has a lock, `STATE.lock`).
    struct Setup {
        let directory: String
        var state: String { directory + "/pf.state" }
        var sysfs: String { directory + "/pf.state.sys" }
        var lockPath: String { state + ".lock" }

        init(vfs: Int) throws {
            directory = makeTemporaryDirectory("service-clock")
            var configuration = SimulatedDeviceConfiguration()
            configuration.totalVFs = vfs
            configuration.numVFs = vfs
            configuration.vfMSIXPool = vfs * 8
            let device = SimulatedSRIOVDevice(configuration: configuration)
            defer { device.stop() }
            try SimulatedDeviceStore.save(device, to: state)
            try device.sysfsTree().write(to: sysfs)
        }

        /// Holds the PF's lock as another process would (an open file description of our own).
        func holdLock() -> Int32 {
            let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            precondition(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
            return fd
        }

        func opener() -> SimulatedPFOpener { SimulatedPFOpener(address: ServiceClockTests.pf, statePath: state, sysfsRoot: sysfs) }

        func service(clock: ManualServiceClock, keepOpen: Bool) throws -> ProvisioningService {
            var options = ProvisioningService.Options()
            options.sysfsRoot = sysfs
            options.keepOpen = keepOpen
            options.clock = clock
            let (state, sysfs) = (state, sysfs)
            return ProvisioningService(policy: try ProvisioningPolicy(text: ServiceClockTests.policyText, file: "p.toml"), options: options,
                                       logger: Logger(label: "test")) { pf in SimulatedPFOpener(address: pf, statePath: state, sysfsRoot: sysfs) }
        }

        func savedDevice() throws -> SimulatedSRIOVDevice { try SimulatedDeviceStore.load(state) }
    }

    /// The address of VF `vf` of the simulated PF.
    static func vfAddress(_ vf: Int) -> String { PCIAddress(domain: 0, routingID: UInt16(0x3b00 + 1 + vf)).description }

    /// A service that keeps PFs open, with VF 0's event under way: its batch waits for the
    /// PF's lock, held (as another process would) until the caller closes `held`.
    func firstBatchWaitingForTheLock(_ setup: Setup) async throws
        -> (service: ProvisioningService, clock: ManualServiceClock, held: Int32, first: Task<EventOutcome, Never>) {
        let held = setup.holdLock()
        let clock = ManualServiceClock()
        let service = try setup.service(clock: clock, keepOpen: true)
        let first = Task { await service.handle(try! self.event("add", Self.vfAddress(0))) }
        await clock.waitForSleepers()
        return (service, clock, held, first)
    }

    func event(_ action: String, _ address: String) throws -> UdevEvent {
        try UdevEvent(environment: ["ACTION": action, "SUBSYSTEM": "pci", "DEVPATH": "/devices/pci0000:00/\(address)"])
    }

    @Test func theManualClockWakesOnlyTheSleepsItsAdvanceReached() async throws {
        let clock = ManualServiceClock(startingAt: 0)
        let short = Task { await clock.sleep(for: .seconds(1)); return clock.nowNanoseconds }
        let long = Task { await clock.sleep(for: .seconds(5)); return clock.nowNanoseconds }
        await clock.waitForSleepers(2)
        clock.advance(by: .milliseconds(999))
        #expect(clock.sleeperCount == 2)
        clock.advance(by: .milliseconds(1))
        #expect(await short.value == 1_000_000_000)
        #expect(clock.sleeperCount == 1)
        long.cancel()  // a cancelled sleep returns without the clock moving
        #expect(await long.value == 1_000_000_000)
        #expect(clock.sleeperCount == 0)
        await clock.sleep(untilNanoseconds: 10)  // a deadline already passed returns at once
        #expect(clock.elapsed(since: 250_000_000) == .milliseconds(750))
    }

    // README: "concurrent invocations take turns on a lock (... waited on for up to 10 s)".
    @Test func anAdminCommandGivesUpOnAHeldLockAfterTenSeconds() async throws {
        let setup = try Setup(vfs: 2)
        let held = setup.holdLock()
        defer { close(held) }
        let clock = ManualServiceClock()
        var options = AdminGroup.Options()
        options.clock = clock
        #expect(options.lockWait == .seconds(10), "the CLI's default lock wait")
        let opening = Task { () throws(VirtioAdminError) -> AdminGroup in
            try await AdminGroup.open(opener: setup.opener(), registry: PluginRegistry(builtInPlugins()), options: options)
        }
        await clock.waitForSleepers()
        clock.advance(by: .milliseconds(9_995))
        await clock.waitForSleepers()  // it tried again and went back to sleep: not given up at 9.995 s
        #expect(clock.sleepsStarted == 2)
        clock.advance(by: .milliseconds(5))
        let result = await opening.result
        guard case .failure(let failure) = result, let error = failure as? VirtioAdminError, case let .pfBusy(pf, lockPath, waited) = error else {
            Issue.record("expected pfBusy, got \(result)")
            return
        }
        #expect(pf == Self.pf && lockPath == setup.lockPath && waited == .seconds(10))
        #expect(error.description == "PF 0000:3b:00.0's admin queue is owned by another process (\(setup.lockPath) is locked; waited 10.0 seconds); stop it or hand the work to 'virtio-admin serve'.")
    }

    @Test func aLockLetGoWhileWaitingIsTakenAtTheNextTry() async throws {
        let setup = try Setup(vfs: 2)
        let held = setup.holdLock()
        let clock = ManualServiceClock()
        var options = AdminGroup.Options()
        options.clock = clock
        let opening = Task { () throws(VirtioAdminError) -> AdminGroup in
            try await AdminGroup.open(opener: setup.opener(), registry: PluginRegistry(builtInPlugins()), options: options)
        }
        await clock.waitForSleepers()
        clock.advance(by: .seconds(3))
        await clock.waitForSleepers()
        close(held)  // the other owner lets go
        clock.advance(by: .milliseconds(5))
        let group = try await opening.value
        #expect(group.address == Self.pf)
        group.close()
        #expect(clock.sleepsStarted == 2, "two 5 ms waits, then the lock")
    }

    @Test func aFreeLockIsTakenWithoutWaiting() async throws {
        let setup = try Setup(vfs: 2)
        let clock = ManualServiceClock()
        var options = AdminGroup.Options()
        options.clock = clock
        let group = try await AdminGroup.open(opener: setup.opener(), registry: PluginRegistry(builtInPlugins()), options: options)
        group.close()
        #expect(clock.sleepsStarted == 0)
    }

    // The service (keepOpen) waits up to 30 s for a PF another process owns, then fails the event.
    @Test func theServiceGivesUpOnAHeldPFAfterThirtySeconds() async throws {
        let setup = try Setup(vfs: 2)
        let held = setup.holdLock()
        defer { close(held) }
        let clock = ManualServiceClock()
        let service = try setup.service(clock: clock, keepOpen: true)
        let add = try event("add", "0000:3b:00.1")
        let handling = Task { await service.handle(add) }
        await clock.waitForSleepers()
        clock.advance(by: .milliseconds(29_995))
        await clock.waitForSleepers()
        clock.advance(by: .milliseconds(5))
        let outcome = await handling.value
        #expect(!outcome.succeeded)
        #expect(outcome.summary.contains("is owned by another process (\(setup.lockPath) is locked; waited 30.0 seconds)"), "\(outcome.summary)")
        await service.shutDown()
    }

    // README: without the service, `udev-event` takes the PF's lock — it waits its turn, however long.
    @Test func theOneShotHelperWaitsForThePFsLockAsLongAsItTakes() async throws {
        let setup = try Setup(vfs: 2)
        let held = setup.holdLock()
        let clock = ManualServiceClock()
        let service = try setup.service(clock: clock, keepOpen: false)
        let handling = Task { await service.handle(try! self.event("add", "0000:3b:00.2")) }
        await clock.waitForSleepers()
        clock.advance(by: .seconds(3600))
        await clock.waitForSleepers()
        close(held)
        clock.advance(by: .milliseconds(5))
        let outcome = await handling.value
        #expect(outcome.succeeded && outcome.summary.contains("MSI-X vectors 2 -> 4"), "\(outcome.summary)")
        let saved = try setup.savedDevice()
        defer { saved.stop() }
        #expect(saved.member(1).msixVectors == 4)
    }

    // README: VF events for one PF that arrive while a batch runs are coalesced into the next
    // batch (a VF already waiting is not queued twice), whose commands are all in flight together.
    @Test func eventsArrivingWhileABatchWaitsFormTheNextBatch() async throws {
        let setup = try Setup(vfs: 16)
        // Batch 1 (VF 0) is under way: it waits for the PF's lock.
        let (service, clock, held, first) = try await firstBatchWaitingForTheLock(setup)
        // VFs 1..15 arrive meanwhile (VF 5 twice): they wait for the next batch.
        let rest = (1..<16).map { vf in Task { await service.handle(try! self.event("add", Self.vfAddress(vf))) } }
        let again = Task { await service.handle(try! self.event("add", Self.vfAddress(5))) }
        while await service.queued(pf: Self.pf).events < 16 { await Task.yield() }
        #expect(await service.queued(pf: Self.pf).requests == 15, "VF 5 waits once")
        close(held)
        clock.advance(by: .milliseconds(5))
        var outcomes = [await first.value, await again.value]
        for task in rest { outcomes.append(await task.value) }
        #expect(outcomes.allSatisfy { $0.succeeded }, "\(outcomes.map(\.summary))")
        #expect(await service.batchCount(pf: Self.pf) == 2, "VF 0, then the 15 that came while it waited")
        await service.shutDown()
        let saved = try setup.savedDevice()
        defer { saved.stop() }
        let byOpcode = saved.counters.adminCommandsByOpcode
        #expect(byOpcode[0x41] == 16, "one MSIX_SET per VF, VF 5 once: \(byOpcode)")
        #expect(saved.counters.resets == 2, "opened once (and closed once) for both batches")
    }

    // The socket's intake: the add of a VF of a PF the service has read is queued for the
    // next batch before `handle(_:answer:)` returns (on the caller's thread, no task per
    // event), and each answer comes once its batch is done and saved.
    @Test func aKnownVFsEventIsQueuedBeforeHandleReturns() async throws {
        let setup = try Setup(vfs: 16)
        // VF 0 reads the PF; its batch waits for the PF's lock.
        let (service, clock, held, first) = try await firstBatchWaitingForTheLock(setup)
        // Each answer records what the state file held when it came.
        let answers = Recorded<[(outcome: EventOutcome, savedVectors: Int?)]>([])
        for vf in 1..<16 {
            service.handle(try event("add", Self.vfAddress(vf))) { outcome in
                let saved = try? setup.savedDevice()
                let vectors = saved?.member(vf).msixVectors
                saved?.stop()
                answers.withLock { $0.append((outcome, vectors)) }
            }
            #expect(await service.queued(pf: Self.pf).requests == vf, "VF \(vf) queued before handle returned")
        }
        #expect(answers.withLock { $0.isEmpty }, "no answer before the batch ran")
        close(held)
        clock.advance(by: .milliseconds(5))
        #expect(await first.value.succeeded)
        for _ in 0..<5000 where answers.withLock({ $0.count }) < 15 { try await Task.sleep(for: .milliseconds(1)) }
        let all = answers.withLock { $0 }
        let outcomes = all.map(\.outcome)
        #expect(outcomes.count == 15 && outcomes.allSatisfy { $0.succeeded && $0.summary.contains("MSI-X vectors 2 -> 4") }, "\(outcomes.prefix(2).map(\.summary))")
        #expect(all.allSatisfy { $0.savedVectors == 4 }, "each answer came after its VF's state was saved: \(all.map(\.savedVectors))")
        #expect(service.addEventReads.byLink == 15 && service.addEventReads.inFull == 1)
        #expect(await service.batchCount(pf: Self.pf) == 2)
        await service.shutDown()
    }

    /// What threads of the service record (answers), behind a lock. A class around a pthread
    /// mutex (the project's `Lock`): ThreadSanitizer sees that mutex's ordering, but not the
    /// atomics inside the standard library's `Mutex` — CI's run reported accesses under a
    /// `Mutex` as races.
    final class Recorded<Value: Sendable>: @unchecked Sendable {
        private let lock = Lock()
        private var value: Value
        init(_ value: Value) { self.value = value }
        func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result { lock.withLock { body(&value) } }
    }

    /// A simulated PF's opener whose saves wait at a gate while it is closed (counting them).
    final class GatedOpener: PFOpener, @unchecked Sendable {
        let inner: SimulatedPFOpener
        let gate = Recorded<(closed: Bool, waiting: Int, saves: Int)>((false, 0, 0))
        init(_ inner: SimulatedPFOpener) { self.inner = inner }
        var address: PCIAddress { inner.address }
        var sysfsRoot: String { inner.sysfsRoot }
        func lock(wait: Duration?, clock: any ServiceClock) async throws(VirtioAdminError) { try await inner.lock(wait: wait, clock: clock) }
        func prepare() throws(VirtioAdminError) { try inner.prepare() }
        func open() throws(VirtioAdminError) -> PFAccess { try inner.open() }
        func checkpoint() throws(VirtioAdminError) {
            gate.withLock { $0.waiting += 1 }
            while gate.withLock({ $0.closed }) { usleep(1000) }
            gate.withLock {
                $0.waiting -= 1
                $0.saves += 1
            }
            try inner.checkpoint()
        }
        func release() { inner.release() }
        var releaseError: VirtioAdminError? { inner.releaseError }
    }

    /// A service that keeps the PF open, reached through a ``GatedOpener``.
    func gatedService(_ setup: Setup) throws -> (ProvisioningService, GatedOpener) {
        var options = ProvisioningService.Options()
        options.sysfsRoot = setup.sysfs
        options.clock = ManualServiceClock()
        let opener = GatedOpener(SimulatedPFOpener(address: Self.pf, statePath: setup.state, sysfsRoot: setup.sysfs))
        let service = ProvisioningService(policy: try ProvisioningPolicy(text: Self.policyText, file: "p.toml"), options: options,
                                          logger: Logger(label: "test")) { _ in opener }
        return (service, opener)
    }

    /// The service's shutdown waits for the last batch's save before it lets the PF go.
    @Test func shuttingDownWaitsForTheLastSave() async throws {
        let setup = try Setup(vfs: 4)
        let (service, opener) = try gatedService(setup)
        #expect(await service.handle(try event("add", Self.vfAddress(0))).succeeded)
        opener.gate.withLock { $0.closed = true }
        service.handle(try event("add", Self.vfAddress(1))) { _ in }
        for _ in 0..<10_000 where opener.gate.withLock({ $0.waiting }) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        #expect(opener.gate.withLock { $0.waiting } == 1, "batch 2's save waits at the gate")
        let finished = StopFlag()
        let shutDown = Task {
            await service.shutDown()
            finished.stop()
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(!finished.isStopped, "the shutdown waits while batch 2's save is held")
        opener.gate.withLock { $0.closed = false }
        await shutDown.value
        #expect(opener.gate.withLock { $0.saves } == 2)
        let saved = try setup.savedDevice()
        defer { saved.stop() }
        #expect(saved.member(1).msixVectors == 4)
    }

    /// README: the next batch's commands are in flight while the last batch's state is
    /// saved; each event is still answered only after its own batch's save.
    @Test func theNextBatchRunsWhileTheLastOneIsSaved() async throws {
        let setup = try Setup(vfs: 4)
        let (service, opener) = try gatedService(setup)
        #expect(await service.handle(try event("add", Self.vfAddress(0))).succeeded)
        let device = try #require(opener.inner.device)
        opener.gate.withLock { $0.closed = true }
        let answered = Recorded<[Int]>([])
        service.handle(try event("add", Self.vfAddress(1))) { outcome in
            if outcome.succeeded { answered.withLock { $0.append(1) } }
        }
        for _ in 0..<10_000 where opener.gate.withLock({ $0.waiting }) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        #expect(opener.gate.withLock { $0.waiting } == 1, "batch 2's save waits at the gate")
        service.handle(try event("add", Self.vfAddress(2))) { outcome in
            if outcome.succeeded { answered.withLock { $0.append(2) } }
        }
        // Batch 3 reaches the device while batch 2's save still waits.
        for _ in 0..<10_000 where device.member(2).msixVectors != 4 { try await Task.sleep(for: .milliseconds(1)) }
        #expect(device.member(2).msixVectors == 4, "VF 2 was provisioned while batch 2's state was being saved")
        // One save at a time: batch 3's does not start while batch 2's is held.
        try await Task.sleep(for: .milliseconds(50))
        #expect(opener.gate.withLock { $0.waiting } == 1 && answered.withLock { $0.isEmpty }, "no answer before its batch's save, one save at a time")
        opener.gate.withLock { $0.closed = false }
        for _ in 0..<10_000 where answered.withLock({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(1)) }
        // Each after its own batch's save (the order of answers across batches is the
        // probers', two threads).
        #expect(answered.withLock { $0.sorted() } == [1, 2], "both answered once the saves were let through")
        #expect(opener.gate.withLock { $0.saves } == 3)
        #expect(await service.batchCount(pf: Self.pf) == 3)
        await service.shutDown()
        let saved = try setup.savedDevice()
        defer { saved.stop() }
        #expect((0..<3).map { saved.member($0).msixVectors } == [4, 4, 4])
    }

    /// An event is answered "ok" only when its batch was saved: a save that fails (the
    /// state file's place taken by a directory) fails the batch's events with the reason.
    @Test func aBatchWhoseStateWasNotSavedIsAnsweredWithTheFailure() async throws {
        let setup = try Setup(vfs: 4)
        let service = try setup.service(clock: ManualServiceClock(), keepOpen: true)
        #expect(await service.handle(try event("add", Self.vfAddress(0))).succeeded)
        #expect(unlink(setup.state) == 0 && mkdir(setup.state, 0o700) == 0)
        defer { rmdir(setup.state) }
        let outcome = await service.handle(try event("add", Self.vfAddress(1)))
        #expect(!outcome.succeeded, "\(outcome.summary)")
        #expect(outcome.summary.contains(setup.state), "the answer names the state file: \(outcome.summary)")
        await service.shutDown()
    }

    // ServiceSocket.send: "An answer takes at most `timeout`" — also below a second.
    @Test func aServiceThatDoesNotAnswerIsGivenUpOnAfterTheTimeout() throws {
        let setup = try Setup(vfs: 1)
        let socket = setup.directory + "/serve.sock"
        let listener = try ServiceSocket.listen(at: socket)  // connections queue; nobody answers
        defer { close(listener) }
        let clock = ContinuousClock()
        let start = clock.now
        let reply = ServiceSocket.send(try event("add", "0000:3b:00.1"), to: socket, timeout: .milliseconds(200))
        let elapsed = clock.now - start
        #expect(reply == nil)
        #expect(elapsed >= .milliseconds(150) && elapsed < .seconds(5), "gave up after \(elapsed)")
    }

    // README: "a `udev-event` that gets no answer does the work itself".
    @Test func theHelperDoesTheWorkItselfWhenTheServiceDoesNotAnswer() async throws {
        let setup = try Setup(vfs: 2)
        let policy = setup.directory + "/policy.toml"
        let fd = open(policy, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = Array(Self.policyText.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        var settings = ServiceSettings()
        settings.policyPath = policy
        settings.simulate = setup.state
        settings.socketPath = setup.directory + "/serve.sock"
        settings.answerTimeout = .milliseconds(100)
        let listener = try ServiceSocket.listen(at: settings.socketPath)
        defer { close(listener) }
        let outcome = try await settings.handleUdevEvent(try event("add", "0000:3b:00.2"), logger: Logger(label: "test"))
        #expect(outcome.succeeded && !outcome.viaService, "\(outcome)")
        #expect(outcome.summary.contains("MSI-X vectors 2 -> 4"), "\(outcome.summary)")
        let saved = try setup.savedDevice()
        defer { saved.stop() }
        #expect(saved.member(1).msixVectors == 4)
    }

    @Test func theListeningSocketIsSystemdsWhenActivatedElseItsOwn() throws {
        let setup = try Setup(vfs: 1)
        var settings = ServiceSettings()
        settings.socketPath = setup.directory + "/serve.sock"
        let activated = try settings.listeningSocket(environment: ["LISTEN_FDS": "1", "LISTEN_PID": "4242"], processID: 4242)
        #expect(activated.fd == 3 && activated.path == nil)
        let own = try settings.listeningSocket(environment: ["LISTEN_FDS": "1", "LISTEN_PID": "1"], processID: 4242)
        defer { close(own.fd) }
        #expect(own.fd > 3 && own.path == settings.socketPath)
        var status = stat()
        #expect(stat(settings.socketPath, &status) == 0 && status.st_mode & S_IFMT == S_IFSOCK && status.st_mode & 0o777 == 0o600)
    }

    @Test func thePolicyFileErrorsAreOneSentenceEach() throws {
        let setup = try Setup(vfs: 1)
        var settings = ServiceSettings()
        settings.policyPath = setup.directory + "/none.toml"
        #expect(throws: PolicyFileError.self) { try settings.loadPolicy() }
        do { _ = try settings.loadPolicy() } catch {
            #expect(error.description == "cannot read the policy \(settings.policyPath): it does not exist (give one with --policy FILE; 'virtio-admin policy --help' shows the format).")
        }
        settings.policyPath = setup.directory
        do { _ = try settings.loadPolicy() } catch {
            #expect(error.description == "cannot read the policy \(setup.directory): Is a directory.")
        }
    }

    @Test func theServiceListensToUdevOnlyOnTheHostsSysfs() {
        var settings = ServiceSettings()
        #expect(settings.listensToUdev(disabled: false))
        #expect(!settings.listensToUdev(disabled: true))
        settings.simulate = "/tmp/x.state"
        #expect(!settings.listensToUdev(disabled: false))
        settings.simulate = nil
        settings.sysfsRoot = "/tmp/tree"
        #expect(!settings.listensToUdev(disabled: false))
    }
}
