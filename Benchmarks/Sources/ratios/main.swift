// The BENCHMARKS.md table: each figure measured against its baseline in the same run.
import BenchmarkSupport
import CAllocCounter
import VirtioSimulator

#if canImport(Glibc)
import Glibc
#endif

func row(_ cells: [String]) { print("| " + cells.joined(separator: " | ") + " |") }
func f(_ value: Double, _ digits: Int = 2) -> String {
    var text = String(Int((value * pow(10, Double(digits))).rounded()))
    while text.count <= digits { text = "0" + text }
    return digits == 0 ? text : String(text.dropLast(digits)) + "." + String(text.suffix(digits))
}

let arguments = CommandLine.arguments
let only = Set(arguments.dropFirst().filter { !$0.hasPrefix("--") }).isEmpty ? ["p1", "p2", "p3", "p4", "p6"]
    : Set(arguments.dropFirst().filter { !$0.hasPrefix("--") })
/// Set when a self-check failed (the allocation counter's): the exit status is 1 then.
var failed = false

// `ratios alloc-check`: only the allocation counter's check (CI runs it).
if only.contains("alloc-check") { failed = !checkAllocationCounter() || failed }

if only.contains("p1") {
    print("\n## P1 — provisioning 1024 VFs × (MSI-X + features) = 2048 commands, L = 50 µs\n")
    // The model's completion thread at nice −10 (P1_MODEL_NICE=0: the default): a device does
    // not wait for the host's scheduler. Beside the driver's threads on two cores it was at
    // times 80–100 µs late at nice 0 (P1 at D = 32 then 2.2–2.5 × the limit; BENCHMARKS.md).
    let modelNice = getenv("P1_MODEL_NICE").flatMap { Int32(String(cString: $0)) } ?? -10
    print("(the model's completion thread at nice \(modelNice); \(geteuid() == 0 ? "" : "not root: refused unless CAP_SYS_NICE; ")its lateness in the last column)\n")
    row(["D", "limit 2048·L/D", "driver (queue 256)", "ratio to limit (goal ≤ 1.15)", "serialised driver", "speed-up vs serialised (goal ≥ 0.8·D)", "notifies/cmd",
         "model late µs/cmd (of it, waiting for the device's lock)"])
    row(["---", "---", "---", "---", "---", "---", "---", "---"])
    // P1_D=32 (or a list: 8,32) measures only those parallelisms (for a profiler run).
    let ds = getenv("P1_D").map { String(cString: $0).split(separator: ",").compactMap { Int($0) } } ?? [1, 8, 32]
    for d in ds {
        let bench = try await Bench.open(vfs: 1024, timing: DeviceTiming(latency: .microseconds(50), parallelism: d, schedulerNice: modelNice))
        let limit = 2048 * 50e-6 / Double(d)
        bench.device.resetCounters()
        let concurrent = try await best(3) { try await measure { try await provisionAll(bench, vfs: 1024, inFlight: 128) } }
        let counters = bench.device.counters
        let notifies = Double(counters.notifies) / (3 * 2048)
        // How late the model delivered the completions past their due time: its scheduler not
        // running on time, or waiting for the device's lock (not the driver's cost).
        let late = Double(counters.completionLatenessNanoseconds) / 1000 / Double(max(counters.scheduledCompletions, 1))
        let lockWait = Double(counters.completionLockWaitNanoseconds) / 1000 / Double(max(counters.scheduledCompletions, 1))
        let serial = try await best(1) { try await measure { try await provisionAll(bench, vfs: 1024, inFlight: 1) } }
        row(["\(d)", f(limit * 1000) + " ms", f(concurrent * 1000) + " ms", f(concurrent / limit), f(serial * 1000) + " ms",
             f(serial / concurrent, 1) + "× (goal ≥ " + f(0.8 * Double(d), 1) + "×)", f(notifies, 3), f(late, 1) + " (lock " + f(lockWait, 1) + ")"])
        bench.close()
    }
}

if only.contains("p2") {
    // P2_MODEL=notify|thread and P2_ROWS=command,batcher,batch pick parts (for a profiler run).
    let env = { (name: String) in getenv(name).map { String(cString: $0) } }
    let models = env("P2_MODEL").map { $0 == "thread" ? [true] : [false] } ?? [false, true]
    let rows = Set((env("P2_ROWS") ?? "command,batcher,batch").split(separator: ",").map(String.init))
    // P2_ALLOC_TRACE=FILE: the call stack of every allocation in each row's measured loop (on
    // the driver's side, or the model's with P2_ALLOC_TRACE_SIDE=model) to FILE.<row>
    // (Benchmarks/Scripts/alloc-sites.py sums them by call site). Use a small P2_TOTAL.
    let tracePath = env("P2_ALLOC_TRACE")
    let counting = alloc_counter_active() != 0
    if !counting { print("\n(the allocation counter is not in effect: allocs/cmd columns say n/a)") }
    var rowNumber = 0
    // P2_ROUNDS=N: every row is measured N times (default 3), the rounds interleaved (all
    // rows once, then all again), so that a minute of host noise does not fall on one row
    // only; a row's figure is its median round, its range the slowest and fastest. (With
    // P2_ALLOC_TRACE the first round, slowed by the stack captures, counts too: use
    // P2_ROUNDS=1 for a trace.)
    let rounds = max(1, env("P2_ROUNDS").flatMap { Int($0) } ?? 3)
    let total = env("P2_TOTAL").flatMap { Int($0) } ?? 200_000
    for ownThread in models {
        print("\n## P2 — driver cost per command, zero-latency device model (MSIX_GET), model " + (ownThread ? "on its own thread" : "in the driver's notify") + "\n")
        print("(\(total) commands a row, \(rounds) interleaved rounds: commands/s is the median round, the range the slowest and fastest)\n")
        if !ownThread { print("(the model runs on the driver's thread here: allocations are counted together, not split)\n") }
        row(["in flight", "commands/s", "range", "vs 1 in flight", "MMIO reads/cmd", "MMIO writes/cmd", "notifies/cmd",
             "allocs/cmd (all threads)", "driver + harness allocs/cmd", "model allocs/cmd"])
        row(["---", "---", "---", "---", "---", "---", "---", "---", "---", "---"])
        struct Row {
            var label: String
            var warmUp: Int
            var loop: @Sendable (Bench, Int) async throws -> Void
            var rates: [Double] = []
            var counters = SimulatedCounters()
            var other: Int64 = 0
            var model: Int64 = 0
        }
        var table: [Row] = []
        // P2_IN_FLIGHT=64 (say) measures only that depth of the per-command rows (for a
        // profiler), after 1 in flight: every row's baseline.
        let depths = [1] + (env("P2_IN_FLIGHT").map { $0.split(separator: ",").compactMap { Int($0) } } ?? [8, 64]).filter { $0 > 1 }
        for inFlight in depths where rows.contains("command") || inFlight == 1 {
            table.append(Row(label: "\(inFlight)", warmUp: 2000) { try await commandLoop($0, total: $1, inFlight: inFlight) })
        }
        for inFlight in [8, 64] where rows.contains("batcher") {
            table.append(Row(label: "\(inFlight) (AdminBatcher)", warmUp: 2048) { try await batcherLoop($0, total: $1, inFlight: inFlight) })
        }
        if rows.contains("batch") {
            table.append(Row(label: "2 × 64 (batch API, 2 submitters)", warmUp: 2048) { try await concurrentBatchLoop($0, total: $1, batch: 64, submitters: 2) })
        }
        for batch in [64, 128] where rows.contains("batch") {
            table.append(Row(label: "\(batch) (batch API)", warmUp: 2048) { try await batchLoop($0, total: $1, batch: batch) })
        }
        for round in 0..<rounds {
            for index in table.indices {
                // A fresh bench, a warm-up, then `total` commands through the row's loop.
                let bench = try await Bench.open(vfs: 64, timing: .immediate, ownThread: ownThread) { alloc_counter_mark_model_thread() }
                defer { bench.close() }
                try await table[index].loop(bench, table[index].warmUp)
                bench.device.resetCounters()
                rowNumber += 1
                let tracing = tracePath != nil && round == 0
                if tracing { alloc_counter_trace_start(env("P2_ALLOC_TRACE_SIDE") == "model" ? 1 : 0, 65536) }
                let (otherBefore, modelBefore) = (alloc_counter_other(), alloc_counter_model())
                let seconds = try await measure { try await table[index].loop(bench, total) }
                table[index].other += alloc_counter_other() - otherBefore
                table[index].model += alloc_counter_model() - modelBefore
                if tracing, let tracePath {
                    writeAllocationTrace(tracePath + ".\(rowNumber)", label: table[index].label + (ownThread ? ", model thread" : ", model in notify"), commands: total)
                }
                table[index].rates.append(Double(total) / seconds)
                let counters = bench.device.counters
                table[index].counters.mmioReads += counters.mmioReads
                table[index].counters.mmioWrites += counters.mmioWrites
                table[index].counters.notifies += counters.notifies
            }
        }
        // The middle round; of an even number, the mean of the two middle ones.
        let median = { (rates: [Double]) -> Double in
            let sorted = rates.sorted()
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        let single = table.first.map { median($0.rates) } ?? 1  // the first row: 1 in flight
        let commands = Double(total * rounds)
        for entry in table {
            let rate = median(entry.rates)
            let perCommand = { (count: Int64) in counting ? f(Double(count) / commands) : "n/a" }
            row([entry.label, f(rate / 1000, 1) + " k", f(entry.rates.min()! / 1000, 1) + "–" + f(entry.rates.max()! / 1000, 1) + " k", f(rate / single) + "×",
                 f(Double(entry.counters.mmioReads) / commands, 3), f(Double(entry.counters.mmioWrites) / commands, 3),
                 f(Double(entry.counters.notifies) / commands, 3),
                 perCommand(entry.other + entry.model), ownThread ? perCommand(entry.other) : "—", ownThread ? perCommand(entry.model) : "—"])
        }
    }
    failed = !checkAllocationCounter() || failed
}

if only.contains("p3") {
    try await runP3(binary: arguments.first { $0.hasPrefix("--binary=") }.map { String($0.dropFirst(9)) } ?? "../.build/release/virtio-admin")
}

if only.contains("p4") {
    let binary = arguments.first { $0.hasPrefix("--binary=") }.map { String($0.dropFirst(9)) } ?? "../.build/release/virtio-admin"
    runP4(binary: binary, before: arguments.first { $0.hasPrefix("--before=") }.map { String($0.dropFirst(9)) })
}

if only.contains("p6") {
    print("\n## P6 — the product's provisioning paths: 1024 VFs by policy (4 vectors + features each), L = 50 µs, D = 8\n")
    let binary = arguments.first { $0.hasPrefix("--binary=") }.map { String($0.dropFirst(9)) } ?? "../.build/release/virtio-admin"
    print("(binary: \(binary); baseline: the same policy through the library's bulk provisioner in this process, same L and D;")
    print(" a process start: `virtio-admin policy check` of the same policy)\n")
    let timing = DeviceTiming(latency: .microseconds(50), parallelism: 8)
    // P6_ROUNDS=N: each path's best of N interleaved rounds (default 5).
    let rounds = max(1, getenv("P6_ROUNDS").flatMap { Int(String(cString: $0)) } ?? 5)
    print("(each path the best of \(rounds) rounds, interleaved: library, `policy apply`, a start, the service, in turn)\n")
    let result = try await measureProvisioningPaths(binary: binary, vfs: 1024, timing: timing, rounds: rounds)
    row(["path", "wall", "baseline (library, in process)", "ratio", "goal"])
    row(["---", "---", "---", "---", "---"])
    row(["library bulk provisioner", f(result.library * 1000) + " ms", f(result.library * 1000) + " ms", "1.00×", "—"])
    row(["`policy apply` (one cold process)", f(result.apply * 1000) + " ms", f(result.library * 1000) + " ms + start " + f(result.start * 1000) + " ms",
         f((result.apply - result.start) / result.library) + "× (after the start)", "≤ 1.5× library + one start: " + (result.apply <= 1.5 * result.library + result.start ? "✔" : "✘")])
    row(["service, 1024 concurrent events", f(result.service * 1000) + " ms", f(result.library * 1000) + " ms", f(result.service / result.library) + "×",
         "≤ 2×: " + (result.service <= 2 * result.library ? "✔" : "✘")])
    row(["(its clients against a server that answers at once)", f(result.clientsAlone * 1000) + " ms", f(result.library * 1000) + " ms",
         f(result.clientsAlone / result.library) + "×", "— (in the service's figure)"])
    row(["model resets during the service run", "\(result.serviceResets)", "—", "—", "1"])
}

if failed { exit(1) }
