import PCIConfig
import VirtioSystem
import VirtioSpec

/// An ``AdminCommandRunner`` that gathers the commands many tasks submit at about the same
/// time and sends them through ``AdminQueueDriver/submitBatch(_:timeout:)``: one doorbell
/// and one wait per batch instead of one per command. Plugins run on it unchanged (they
/// take any runner); the bulk provisioner uses it so that every VF's reads, then writes,
/// go to the device as batches.
///
/// A batch is sent when the first command of it has let the other ready tasks run once;
/// while it is on the ring, the next one gathers.
package final class AdminBatcher: AdminCommandRunner, @unchecked Sendable {
    typealias Waiter = UnsafeContinuation<Result<AdminResponse, AdminError>, Never>

    package let driver: AdminQueueDriver
    // Guarded by `lock`: the next batch, as the arrays the driver takes (commands, their
    // timeouts) and the callers waiting for them, in the same order.
    private let lock = Lock()
    private var commands: [AdminCommand] = []
    private var timeouts: [Duration?] = []
    private var waiters: [Waiter] = []
    private var sending = false
    private var sent = 0
    /// Batches sent so far.
    package var batches: Int { lock.withLock { sent } }

    package init(driver: AdminQueueDriver) { self.driver = driver }

    package var address: PCIAddress { driver.address }
    package var clock: any AdminClock { driver.clock }
    package var supported: AdminOpcodeBitmap { driver.supported }
    package var inUse: AdminOpcodeBitmap { driver.inUse }
    package func inUse(in group: AdminGroupType) -> AdminOpcodeBitmap { driver.inUse(in: group) }
    package func name(of opcode: AdminOpcode) -> String { driver.name(of: opcode) }
    package func unavailability(of group: AdminGroupType) -> AdminError? { driver.unavailability(of: group) }
    package func refreshGroup(_ group: AdminGroupType) async throws(AdminError) { try await driver.refreshGroup(group) }

    /// Queues the command for the next batch and returns the device's answer.
    package func submit(_ command: AdminCommand, timeout: Duration?) async throws(AdminError) -> AdminResponse {
        let result = await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<AdminResponse, AdminError>, Never>) in
            let start = lock.withLock { () -> Bool in
                commands.append(command)
                timeouts.append(timeout)
                waiters.append(continuation)
                guard !sending else { return false }
                sending = true
                return true
            }
            if start { Task { await self.sendLoop() } }
        }
        return try result.get()
    }

    /// As the driver's ``AdminQueueDriver/run(_:timeout:minimumResult:)``: EAGAIN is retried.
    package func runChecked(_ command: AdminCommand, timeout: Duration?, minimumResult: Int) async throws(AdminError) -> [UInt8] {
        let response = try await submitRetryingEAGAIN(command, timeout: timeout)
        return try checkedResult(of: command, response: response, minimumResult: minimumResult)
    }

    /// Sends what gathered, batch after batch, until nothing is pending. The batch's arrays
    /// are swapped with spare ones under the lock and emptied (keeping their storage) once
    /// sent: batch after batch, no array is allocated for them.
    private func sendLoop() async {
        var batchCommands: [AdminCommand] = []
        var batchTimeouts: [Duration?] = []
        var batchWaiters: [Waiter] = []
        while true {
            // Let the other ready tasks add their commands first.
            await Task.yield()
            let empty = lock.withLock { () -> Bool in
                swap(&commands, &batchCommands)
                swap(&timeouts, &batchTimeouts)
                swap(&waiters, &batchWaiters)
                if batchCommands.isEmpty { sending = false } else { sent += 1 }
                return batchCommands.isEmpty
            }
            if empty { return }
            let results = await driver.submitBatch(batchCommands, timeouts: .each(batchTimeouts))
            for (waiter, result) in zip(batchWaiters, results) { waiter.resume(returning: result) }
            batchCommands.removeAll(keepingCapacity: true)
            batchTimeouts.removeAll(keepingCapacity: true)
            batchWaiters.removeAll(keepingCapacity: true)
        }
    }
}
