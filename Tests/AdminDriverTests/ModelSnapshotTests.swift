import Synchronization
import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
@testable import VirtioSimulator
import VirtioSpec
import VirtioSystem
import MSIXResourceManager

/// A state file written while the model works (the service's checkpoints, an interrupt's
/// save) is the model at one instant: its counters agree with its VFs' resources.
struct ModelSnapshotTests {
    @Test func aSnapshotOfABusyModelIsOneInstant() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], configuration: SimulatedDeviceConfiguration(vfs: 64))
        defer { group.shutDown() }
        group.device.processQueuesOnOwnThread()
        let device = group.device
        let commandsBefore = device.counters.adminCommands
        let initial = device.members.map(\.msixVectors)
        // Set k (k = 0, 1, 2 …) gives VF k % 64 the vectors 1 + (k / 64) % 3: from the count of
        // commands a snapshot shows, every VF's vectors follow.
        @Sendable func expectedVectors(afterSets sets: Int) -> [Int] {
            (0..<64).map { vf in
                guard sets > vf else { return initial[vf] }
                let last = vf + 64 * ((sets - 1 - vf) / 64)
                return 1 + (last / 64) % 3
            }
        }
        let done = Atomic<Bool>(false)
        let taken = Atomic<Int>(0)
        let torn = Mutex<[String]>([])
        // Snapshots on a thread of their own (a loop that never suspends would hold one of
        // the test process's few pool threads).
        let snapshots = try #require(JoinableThread {
            while !done.load(ordering: .relaxed) {
                let text = SimulatedDeviceStore.encode(device)
                taken.add(1, ordering: .relaxed)
                var commands = 0
                var vectors = [Int](repeating: -1, count: 64)
                for line in text.split(separator: "\n") {
                    let fields = line.split(separator: " ")
                    if fields.first == "counters", let field = fields.first(where: { $0.hasPrefix("admin-commands=") }) {
                        commands = Int(field.dropFirst("admin-commands=".count)) ?? -1
                    } else if fields.first == "vf", fields.count > 2, let vf = Int(fields[1]), fields[2].hasPrefix("vectors=") {
                        vectors[vf] = Int(fields[2].dropFirst("vectors=".count)) ?? -1
                    }
                }
                let sets = commands - commandsBefore
                if sets >= 0, vectors != expectedVectors(afterSets: sets) {
                    torn.withLock { if $0.count < 3 { $0.append("\(sets) sets counted, vectors \(vectors)") } }
                }
            }
        })
        let msix = MSIXResourceManager()
        for k in 0..<6000 {
            try await msix.setVectors(1 + (k / 64) % 3, of: k % 64, driver: group.driver)
        }
        done.store(true, ordering: .relaxed)
        snapshots.join()
        #expect(device.members.map(\.msixVectors) == expectedVectors(afterSets: 6000))
        #expect(taken.load(ordering: .relaxed) > 10, "snapshots taken while the model worked: \(taken.load(ordering: .relaxed))")
        #expect(torn.withLock { $0 }.isEmpty, "snapshots whose counters and VFs disagree: \(torn.withLock { $0 })")
    }
}
