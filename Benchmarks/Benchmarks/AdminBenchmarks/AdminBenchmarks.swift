import Benchmark
import BenchmarkSupport
import VirtioSimulator

// ordo-one/benchmark: wall clock, malloc counts and custom metrics. The ratio table of
// BENCHMARKS.md comes from `swift run -c release ratios` (baselines in the same run).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal, .throughput], maxDuration: .seconds(5), maxIterations: 20)

    for inFlight in [1, 8, 64] {
        Benchmark("P2 MSIX_GET ×1000, \(inFlight) in flight", configuration: .init(scalingFactor: .kilo)) { benchmark in
            let bench = try await Bench.open(vfs: 64, timing: .immediate)
            defer { bench.close() }
            try await commandLoop(bench, total: 1000, inFlight: inFlight)
            bench.device.resetCounters()
            benchmark.startMeasurement()
            try await commandLoop(bench, total: 1000, inFlight: inFlight)
            benchmark.stopMeasurement()
            let counters = bench.device.counters
            benchmark.measurement(.custom("notifies per 1000 commands"), counters.notifies)
            benchmark.measurement(.custom("MMIO reads per 1000 commands"), counters.mmioReads)
        }
    }

    Benchmark("P2 MSIX_GET ×1024, batches of 64 (submitBatch)", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let bench = try await Bench.open(vfs: 64, timing: .immediate)
        defer { bench.close() }
        try await batchLoop(bench, total: 1024, batch: 64)
        benchmark.startMeasurement()
        try await batchLoop(bench, total: 1024, batch: 64)
        benchmark.stopMeasurement()
    }

    for d in [1, 8, 32] {
        Benchmark("P1 provision 1024 VFs, D=\(d), L=50us") { benchmark in
            let bench = try await Bench.open(vfs: 1024, timing: DeviceTiming(latency: .microseconds(50), parallelism: d))
            defer { bench.close() }
            benchmark.startMeasurement()
            try await provisionAll(bench, vfs: 1024, inFlight: 128)
            benchmark.stopMeasurement()
        }
    }
}
