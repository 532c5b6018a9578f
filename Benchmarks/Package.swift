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
        .target(name: "BenchmarkSupport", dependencies: [
            .product(name: "VirtioSimulator", package: "VirtioAdmin"),
            .product(name: "VirtioTransport", package: "VirtioAdmin"),
            .product(name: "VirtioAdminDriver", package: "VirtioAdmin"),
            .product(name: "MSIXResourceManager", package: "VirtioAdmin"),
            .product(name: "FeatureBitsResourceManager", package: "VirtioAdmin"),
            .product(name: "VirtioLinux", package: "VirtioAdmin"),
            .product(name: "VirtioAdmin", package: "VirtioAdmin"),
            .product(name: "VirtioProvisioning", package: "VirtioAdmin"),
            .product(name: "ResourceManager", package: "VirtioAdmin"),
            .product(name: "PCIConfig", package: "VirtioAdmin"),
        ]),
        .executableTarget(name: "ratios", dependencies: ["BenchmarkSupport"]),
        .executableTarget(
            name: "AdminBenchmarks",
            dependencies: ["BenchmarkSupport", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/AdminBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
