import Synchronization
import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import MSIXResourceManager

#if canImport(Glibc)
import Glibc
#endif

/// `processQueuesOnOwnThread(onThreadStart:)`: the hook a benchmark uses to mark the
/// model's thread (Benchmarks' allocation counter) runs once, on that thread, before it
/// processes anything.
struct ModelThreadStartTests {
    final class Gate: Sendable {
        let open = Atomic<Bool>(false)
        let calls = Atomic<Int>(0)
    }

    @Test func onThreadStartRunsOnceOnTheModelsThreadBeforeItsFirstCommand() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        let gate = Gate()
        group.device.processQueuesOnOwnThread(onThreadStart: {
            gate.calls.add(1, ordering: .sequentiallyConsistent)
            while !gate.open.load(ordering: .sequentiallyConsistent) { usleep(200) }
        })
        let commandsBefore = group.device.counters.adminCommands
        let submittedBefore = group.driver.statistics.submitted
        let msix = MSIXResourceManager()
        let command = Task { try await msix.vectors(of: 3, driver: group.driver) }
        // The hook holds the model's thread: the submitted command waits, unprocessed. (The
        // test sleeps without blocking its thread: the command's task needs the pool.)
        for _ in 0..<10_000 where gate.calls.load(ordering: .sequentiallyConsistent) == 0 || group.driver.statistics.submitted == submittedBefore {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(group.driver.statistics.submitted == submittedBefore + 1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(gate.calls.load(ordering: .sequentiallyConsistent) == 1)
        #expect(group.device.counters.adminCommands == commandsBefore, "no command processed while the hook runs")
        gate.open.store(true, ordering: .sequentiallyConsistent)
        #expect(try await command.value == 2)
        #expect(group.device.counters.adminCommands == commandsBefore + 1)
        // The thread runs already: a second call neither starts another nor runs its hook.
        group.device.processQueuesOnOwnThread(onThreadStart: { gate.calls.add(100, ordering: .sequentiallyConsistent) })
        #expect(try await msix.vectors(of: 4, driver: group.driver) == 2)
        #expect(gate.calls.load(ordering: .sequentiallyConsistent) == 1)
    }
}
