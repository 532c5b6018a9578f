// swift-tools-version:6.3
import PackageDescription

// Benchmarks of VirtioAdmin, kept out of the main build. Run:
//   cd Benchmarks && swift package benchmark          (ordo-one/benchmark: time, mallocs, custom ratio metrics)
//   cd Benchmarks && swift run -c release ratios      (the BENCHMARKS.md table: each figure against its baseline, same run)
let package = Package(
    name: "VirtioAdminBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(name: "VirtioAdmin", path: ".."),
    ],
    targets: [
        // The scenarios live in Sources/BenchmarkSupport but build in the main package (product
        // _VirtioAdminBenchmarkSupport, not API): they measure code that is `package` access there.
        .executableTarget(name: "ratios", dependencies: [
            .product(name: "_VirtioAdminBenchmarkSupport", package: "VirtioAdmin"), .product(name: "VirtioSimulator", package: "VirtioAdmin"),
            "CAllocCounter",
        ]),
        // ratios' allocation counter: replaces malloc & co. in that executable only, and counts
        // the device model's thread apart from the others (P2's allocs/cmd columns).
        .target(name: "CAllocCounter"),
        .executableTarget(
            name: "AdminBenchmarks",
            dependencies: [
                .product(name: "_VirtioAdminBenchmarkSupport", package: "VirtioAdmin"), .product(name: "VirtioSimulator", package: "VirtioAdmin"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/AdminBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
