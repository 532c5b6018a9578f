import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioSystem
import MSIXResourceManager

/// The batch API: N commands on the ring with one doorbell, N results back in order.
struct BatchTests {
    static func get(_ vf: Int) -> AdminCommand { AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(vfIndex: vf), resultLength: 8) }
    /// MSIX_SET (project opcode 0x41): le16 vector count, padded to 8 bytes.
    static func set(_ vf: Int, _ vectors: UInt8) -> AdminCommand {
        AdminCommand(opcode: AdminOpcode(0x41), member: GroupMemberID(vfIndex: vf), data: [vectors, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func oneNotifyForTheWholeBatchAndResultsInOrder() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        // For each VF: set its vectors to a value of its own, then read them back — the
        // device processes in order, so each read sees the set just before it.
        var commands: [AdminCommand] = []
        for vf in 0..<8 {
            commands.append(Self.set(vf, UInt8(3 + vf)))
            commands.append(Self.get(vf))
        }
        let notifiesBefore = group.device.counters.notifies
        let commandsBefore = group.device.counters.adminCommands
        let results = await group.driver.submitBatch(commands)
        #expect(group.device.counters.notifies - notifiesBefore == 1, "one doorbell for 16 commands")
        #expect(group.device.counters.adminCommands - commandsBefore == 16)
        #expect(results.count == 16)
        for vf in 0..<8 {
            let set = try results[2 * vf].get()
            let get = try results[2 * vf + 1].get()
            #expect(set.status == .ok)
            #expect(get.status == .ok)
            #expect(get.result.prefix(2) == [UInt8(3 + vf), 0], "VF \(vf): the read after its set, in order")
        }
        #expect(group.driver.statistics.peakInFlight >= 16, "all 16 were on the ring together")
    }

    @Test func aBatchLargerThanTheSlotsGoesInRoundsOfOneDoorbellEach() async throws {
        var options = AdminQueueDriver.Options()
        options.queueSize = 8  // 4 command slots
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
        defer { group.shutDown() }
        let notifiesBefore = group.device.counters.notifies
        let results = await group.driver.submitBatch((0..<8).map { Self.get($0) })
        #expect(group.device.counters.notifies - notifiesBefore == 2, "8 commands, 4 slots: two rounds")
        #expect(results.map { try? $0.get().result.prefix(2) } == Array(repeating: [2, 0], count: 8))
    }

    @Test func refusedCommandsFailInTheirPlaceWithoutStoppingTheBatch() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        let tooLarge = AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(vfIndex: 0), data: [UInt8](repeating: 0, count: (1 << 20) + 1))
        let notInUse = AdminCommand(opcode: AdminOpcode(0x1f0), member: GroupMemberID(vfIndex: 0))
        let results = await group.driver.submitBatch([Self.get(0), tooLarge, Self.get(1), notInUse, Self.get(2)])
        #expect(results.count == 5)
        let refused = AdminError.commandTooLarge(device: group.device.pfAddress, opcode: AdminOpcode(0x40), opcodeName: "MSIX_GET",
                                                 dataBytes: (1 << 20) + 1, resultBytes: 0, dataLimit: (1 << 20) - 24, resultLimit: (1 << 20) - 8)
        #expect(throws: refused) { try results[1].get() }
        #expect(refused.description == "0000:3b:00.0: MSIX_GET (opcode 0x0040) was not sent: it has 1048577 data and 0 result bytes, and the driver sends at most 1048552 data and 1048568 result bytes (Options.largeCommandBytes).")
        if case .failure(.commandNotInUse(_, let opcode, _, _)) = results[3] { #expect(opcode == AdminOpcode(0x1f0)) } else {
            Issue.record("expected commandNotInUse, got \(results[3])")
        }
        for index in [0, 2, 4] { #expect((try? results[index].get().status) == .ok) }
    }

    @Test func anEmptyBatchSendsNothing() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        let notifiesBefore = group.device.counters.notifies
        #expect(await group.driver.submitBatch([]).isEmpty)
        #expect(group.device.counters.notifies == notifiesBefore)
    }
}

import VirtioProvisioning

/// The batcher and the bulk provisioner on it.
struct BatcherTests {
    @Test func concurrentSubmissionsShareBatchesWithOneDoorbellEach() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        let batcher = AdminBatcher(driver: group.driver)
        let msix = MSIXResourceManager()
        let notifiesBefore = group.device.counters.notifies
        let vectors = try await withThrowingTaskGroup(of: (Int, Int).self) { tasks in
            for vf in 0..<8 { tasks.addTask { (vf, try await msix.vectors(of: vf, driver: batcher)) } }
            return try await tasks.reduce(into: [Int: Int]()) { $0[$1.0] = $1.1 }
        }
        #expect(vectors == Dictionary(uniqueKeysWithValues: (0..<8).map { ($0, 2) }))
        #expect(batcher.batches >= 1 && batcher.batches <= 8)
        #expect(group.device.counters.notifies - notifiesBefore == batcher.batches, "one doorbell per batch")
    }

    @Test func bulkProvisioningGoesThroughBatches() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        let provisioner = Provisioner(driver: group.driver, memberType: .net)
        let notifiesBefore = group.device.counters.notifies
        let commandsBefore = group.device.counters.adminCommands
        let outcomes = await provisioner.apply((0..<8).map { VFRequest(vf: $0, desired: DesiredResources(msixVectors: 3 + $0)) })
        #expect(outcomes.map(\.vf) == Array(0..<8))
        #expect(outcomes.allSatisfy { $0.succeeded })
        for vf in 0..<8 { #expect(group.device.member(vf).msixVectors == 3 + vf) }
        // 8 reads and 8 writes: each VF's read, then its write, as batches.
        let commands = group.device.counters.adminCommands - commandsBefore
        #expect(commands == 16)
        #expect(group.device.counters.notifies - notifiesBefore < commands, "fewer doorbells than commands")
    }

    /// By default the bulk provisioner works on as many VFs at once as the admin queue holds
    /// commands (a VF has one in flight at a time): a queue of 8 descriptors holds 4, so no
    /// fifth VF's command is sent while 4 VFs are part-way through theirs.
    @Test func bulkProvisioningWorksOnAsManyVFsAsTheQueueHoldsCommands() async throws {
        var options = AdminQueueDriver.Options()
        options.queueSize = 8
        var configuration = SimulatedDeviceConfiguration()
        configuration.totalVFs = 16
        configuration.numVFs = 16
        configuration.vfMSIXPool = 128
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], configuration: configuration, options: options)
        defer { group.shutDown() }
        #expect(group.driver.slotCount == 4)
        let sent = SentMembers()
        group.driver.setTrace { event in
            if case let .sent(command, _) = event, let vf = command.member.vfIndex { sent.append(vf) }
        }
        let provisioner = Provisioner(driver: group.driver, memberType: .net)
        let outcomes = await provisioner.apply((0..<16).map { VFRequest(vf: $0, desired: DesiredResources(msixVectors: 3)) })
        group.driver.setTrace(nil)
        #expect(outcomes.allSatisfy { $0.succeeded })
        // Each VF: its read, then its write. A VF is part-way from its first command sent to its last.
        let order = sent.members
        #expect(order.count == 32)
        var commandsSent: [Int: Int] = [:]
        var partWay = 0
        var mostPartWay = 0
        for vf in order {
            commandsSent[vf, default: 0] += 1
            if commandsSent[vf] == 1 { partWay += 1 }
            if commandsSent[vf] == 2 { partWay -= 1 }
            mostPartWay = max(mostPartWay, partWay)
        }
        #expect(mostPartWay == 4, "VFs part-way at once: \(mostPartWay) (commands sent, by VF: \(order))")
        // An explicit limit still applies.
        let one = SentMembers()
        group.driver.setTrace { event in
            if case let .sent(command, _) = event, let vf = command.member.vfIndex { one.append(vf) }
        }
        _ = await provisioner.apply((0..<4).map { VFRequest(vf: $0, desired: DesiredResources(msixVectors: 5)) }, maxInFlight: 1)
        group.driver.setTrace(nil)
        #expect(one.members == [0, 0, 1, 1, 2, 2, 3, 3])
    }

    /// VFs of commands the driver sent, recorded from the threads that send them (behind a
    /// pthread mutex, whose ordering ThreadSanitizer sees).
    final class SentMembers: @unchecked Sendable {
        private let lock = Lock()
        private var recorded: [Int] = []
        func append(_ vf: Int) { lock.withLock { recorded.append(vf) } }
        var members: [Int] { lock.withLock { recorded } }
    }
}

/// The device model processing its queues on a thread of its own: the same driver, the
/// same answers, completions found by the poller.
struct ModelThreadTests {
    @Test func commandsCompleteThroughTheModelThread() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        group.device.processQueuesOnOwnThread()
        let msix = MSIXResourceManager()
        try await msix.setVectors(5, of: 3, driver: group.driver)
        #expect(try await msix.vectors(of: 3, driver: group.driver) == 5)
        let notifiesBefore = group.device.counters.notifies
        let results = await group.driver.submitBatch((0..<8).map { BatchTests.get($0) })
        #expect(group.device.counters.notifies - notifiesBefore == 1)
        #expect(results.map { try? $0.get().result.prefix(2) } == (0..<8).map { [$0 == 3 ? 5 : 2, 0] })
        let concurrent = try await withThrowingTaskGroup(of: Int.self) { tasks in
            for index in 0..<64 { tasks.addTask { try await msix.vectors(of: index % 8, driver: group.driver) } }
            return try await tasks.reduce(0, +)
        }
        #expect(concurrent == 8 * (7 * 2 + 5))
        #expect(group.driver.statistics.completed == group.driver.statistics.submitted)
    }

    /// One command at a time: the poller lets each resumed caller run by handing itself to
    /// it — no `Task.yield()`, whose job is a heap allocation per command.
    @Test func thePollerHandsItselfToTheCallerItResumed() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        group.device.processQueuesOnOwnThread()
        // A latency, so that no command completes during its own submission (reaped there,
        // with nothing to hand off): the poller takes the completions.
        group.device.setTiming(DeviceTiming(latency: .microseconds(100), parallelism: 1))
        let before = group.driver.statistics
        for vf in 0..<200 {
            let response = try await group.driver.submit(BatchTests.get(vf % 8))
            #expect(response.result.prefix(2) == [2, 0])
        }
        let after = group.driver.statistics
        let handOffs = after.pollerHandOffs - before.pollerHandOffs
        #expect(after.pollerYieldsAfterProgress == before.pollerYieldsAfterProgress, "no yield after a completion of a command's caller")
        // A poller off the processor for over a millisecond stops, and the next one reaps
        // without a hand-off: on a busy machine fewer than one per command. (Whether it
        // suspends for the caller or finds it already ran on another thread is the scheduler's.)
        #expect(handOffs >= 20 && handOffs <= 200, "a hand-off per completed command (nearly), got \(handOffs)")
        #expect(after.pollerParks - before.pollerParks <= handOffs)
    }

    /// A batch's caller polls the used ring while the device makes progress (no task
    /// switch for a fast device); with `callerSpin` zero it leaves the wait to the poller.
    @Test func aBatchCallerPollsTheUsedRingItselfUnlessTold() async throws {
        for spin in [Duration.seconds(10), .zero] {
            var options = AdminQueueDriver.Options()
            options.callerSpin = spin
            let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
            defer { group.shutDown() }
            group.device.processQueuesOnOwnThread()
            group.device.setTiming(DeviceTiming(latency: .milliseconds(2), parallelism: 4))
            for _ in 0..<3 {
                let results = await group.driver.submitBatch((0..<16).map { BatchTests.get($0 % 8) })
                #expect(results.map { try? $0.get().result.prefix(2) } == Array(repeating: [2, 0], count: 16))
            }
            let taken = group.driver.statistics.completedWhileWaiting
            if spin == .zero {
                #expect(taken == 0, "the caller never polled; the poller completed every batch")
            } else {
                #expect(taken > 24, "the waiting caller took (nearly) all 48 completions itself, got \(taken)")
            }
        }
    }

    /// A device that needs a reset while a batch's caller polls the used ring fails the
    /// batch with that reason at once — not with timeouts when the deadlines pass.
    @Test func aPollingCallerSeesADeviceThatNeedsAReset() async throws {
        var options = AdminQueueDriver.Options()
        options.callerSpin = .seconds(10)
        options.defaultTimeout = .seconds(30)
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
        defer { group.shutDown() }
        group.device.processQueuesOnOwnThread()
        _ = await group.driver.submitBatch((0..<4).map { BatchTests.get($0) })
        group.device.setFault(.needsResetMidFlight)
        let start = monotonicNanoseconds()
        let results = await group.driver.submitBatch((0..<16).map { BatchTests.get($0 % 8) })
        let took = Duration.nanoseconds(Int64(monotonicNanoseconds() - start))
        #expect(results.count == 16)
        for result in results {
            guard case .failure(.deviceNeedsReset(let device)) = result else {
                Issue.record("expected deviceNeedsReset, got \(result)")
                continue
            }
            #expect(device == group.driver.address)
        }
        // Milliseconds on a quiet machine; the bound leaves room for a suite on busy cores.
        #expect(took < .seconds(20), "failed with the device's reason after \(took), before the 30 s timeout")
    }

    /// Callers polling for their batches on every executor thread must not keep anyone's
    /// timeout from firing: a command the device keeps times out on time while four other
    /// tasks send batch after batch (found in review: the polling used to go on as long as
    /// anyone's command completed, and only the starved poller expired deadlines).
    @Test func aHeldCommandTimesOutWhileOtherCallersPoll() async throws {
        var options = AdminQueueDriver.Options()
        options.defaultTimeout = .milliseconds(50)
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
        defer { group.shutDown() }
        group.device.processQueuesOnOwnThread()
        let driver = group.driver, device = group.device
        final class Flag: @unchecked Sendable {
            let lock = Lock()
            var value = false
            var isSet: Bool { lock.withLock { value } }
            func set() { lock.withLock { value = true } }
        }
        let stop = Flag(), heldDone = Flag()
        // Four callers sending MSIX_GET batches (each may lose a command to the fault too).
        let traffic = Task.detached {
            await withTaskGroup(of: Void.self) { tasks in
                for _ in 0..<4 {
                    tasks.addTask { while !stop.isSet { _ = await driver.submitBatch((0..<4).map { BatchTests.get($0) }) } }
                }
            }
        }
        try await Task.sleep(for: .milliseconds(20))
        // The device keeps the held MSIX_SET (a different opcode, so its arrival is seen in
        // the model's counters), then answers everything again.
        let setsBefore = device.counters.adminCommandsByOpcode[0x41] ?? 0
        device.setFault(.neverComplete)
        let created = monotonicNanoseconds()
        let held = Task.detached { () -> (results: [Result<AdminResponse, AdminError>], took: Duration) in
            defer { heldDone.set() }
            let submitted = monotonicNanoseconds()
            let results = await driver.submitBatch([BatchTests.set(1, 3)], timeout: .milliseconds(20))
            return (results, .nanoseconds(Int64(monotonicNanoseconds() - submitted)))
        }
        // Waits without taking an executor thread (the held task needs one): up to 10 s for
        // the device to see the held command — longer means the callers' polling starved it.
        while (device.counters.adminCommandsByOpcode[0x41] ?? 0) == setsBefore && monotonicNanoseconds() - created < 10_000_000_000 {
            try await Task.sleep(for: .milliseconds(1))
        }
        let seen = (device.counters.adminCommandsByOpcode[0x41] ?? 0) != setsBefore
        device.setFault(.neverComplete, false)
        // A watchdog on a thread of its own (the executor's may all be taken): 10 s after the
        // held command was seen it stops the traffic and closes the driver, so a regression
        // fails instead of hanging.
        let watchdog = JoinableThread {
            let start = monotonicNanoseconds()
            while !heldDone.isSet && monotonicNanoseconds() - start < 10_000_000_000 { Sys.sleepMicroseconds(5_000) }
            if !heldDone.isSet { stop.set(); _ = driver.close() }
        }
        let (results, took) = await held.value
        let onTime = !stop.isSet
        stop.set()
        await traffic.value
        watchdog?.join()
        #expect(seen, "the held command reached the device within 10 s while four callers polled")
        guard seen else { return }
        #expect(onTime, "the held command's batch returned (after \(took)) while the others kept polling")
        // Well before the watchdog; on a quiet machine it takes 20–25 ms, with the whole
        // suite running on two busy cores up to 1.3 s.
        #expect(took < .seconds(8), "a 20 ms timeout fired within 8 s of the submission, not after \(took)")
        guard case .failure(.timeout) = results.first else {
            Issue.record("expected the held MSIX_SET to time out, got \(String(describing: results.first))")
            return
        }
    }
}
