import Glibc
import Synchronization
import Testing
@testable import VirtioSystem

/// The service's `drivers_probe` writes: a few threads for many calls, one open file per run.
struct BlockingQueueTests {
    /// Calls that come together run at most `maxThreads` at once, each caller gets its own
    /// value, and each thread opens its resource once for all the calls it runs in a row.
    @Test func manyCallsRunOnAtMostTheGivenThreadsAndShareEachThreadsResource() async {
        let opens = Atomic<Int>(0)
        let closes = Atomic<Int>(0)
        let queue = BlockingQueue<Int>(maxThreads: 2, open: { opens.add(1, ordering: .relaxed).newValue }, close: { _ in closes.add(1, ordering: .relaxed) })
        let results = await withTaskGroup(of: (Int, Int).self) { group in
            for index in 0..<200 {
                group.addTask {
                    await queue.run { resource in
                        usleep(100)
                        return (index, resource)
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.map(\.0).sorted() == Array(0..<200), "every caller got its own call's value")
        #expect(queue.peakConcurrency >= 1 && queue.peakConcurrency <= 2, "\(queue.peakConcurrency) calls at once")
        #expect(queue.threadsStarted < 200, "\(queue.threadsStarted) threads for 200 calls")
        #expect(opens.load(ordering: .relaxed) == queue.threadsStarted, "one open per thread")
        // Threads end (and close) when nothing waits.
        for _ in 0..<200 where closes.load(ordering: .relaxed) < queue.threadsStarted { usleep(1000) }
        #expect(closes.load(ordering: .relaxed) == queue.threadsStarted)
        #expect(Set(results.map(\.1)).count <= queue.threadsStarted, "the calls of one thread share its resource")
    }

    /// With one thread, calls run in the order they came.
    @Test func oneThreadRunsCallsInTheirOrder() async {
        let queue = BlockingQueue(maxThreads: 1)
        final class Order: @unchecked Sendable {
            let lock = Lock()
            var values: [Int] = []
            func append(_ value: Int) { lock.withLock { values.append(value) } }
        }
        let order = Order()
        // Hold the thread so that the rest queue up behind it.
        let gate = Atomic<Bool>(false)
        async let first: Void = queue.run { _ in while !gate.load(ordering: .acquiring) { usleep(100) }; order.append(0) }
        for _ in 0..<1000 where queue.peakConcurrency == 0 { usleep(100) }
        var waiting: [Task<Void, Never>] = []
        for index in 1...5 {
            waiting.append(Task { await queue.run { _ in order.append(index) } })
            for _ in 0..<1000 where queue.lock.withLock({ queue.jobs.count - queue.head }) < index { usleep(100) }
        }
        gate.store(true, ordering: .releasing)
        await first
        for task in waiting { await task.value }
        #expect(order.lock.withLock { order.values } == [0, 1, 2, 3, 4, 5])
        #expect(queue.peakConcurrency == 1)
    }

    /// An attribute file is written at offset 0 and never truncated (sysfs takes each write
    /// as one store; a regular file standing in for it shows the last value of that length);
    /// one that cannot be opened names its path at each write.
    @Test func anAttributeFileWritesAtTheStartWithoutTruncating() throws {
        let directory = try Sys.makeTemporaryDirectory(prefix: "/tmp/virtio-system-tests-")
        defer { Sys.removeTree(directory) }
        let path = directory + "/drivers_probe"
        try Sys.writeSmallFile(path, "", create: true)
        let file = AttributeFile(path: path)
        try file.write("0000:3b:00.1")
        try file.write("0000:3b:00.2")
        #expect(try Sys.readText(path) == "0000:3b:00.2")
        try file.write("abc")
        #expect(try Sys.readText(path) == "abc0:3b:00.2", "not truncated")
        file.close()
        let missing = AttributeFile(path: directory + "/missing")
        #expect(throws: SystemCallError(call: "open", path: directory + "/missing", errno: .noSuchFileOrDirectory)) { try missing.write("1") }
    }
}
