// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for VirtioAdmin's parsers of untrusted input. Run them with
// ../scripts/fuzz (FUZZ_SECONDS per target). Kept out of the main build.
let package = Package(
    name: "VirtioAdminFuzz",
    dependencies: [.package(name: "VirtioAdmin", path: "..")],
    targets: [
        .executableTarget(name: "FuzzConfigSpace", dependencies: [.product(name: "PCIConfig", package: "VirtioAdmin")]),
        .executableTarget(name: "FuzzAdminResult", dependencies: [
            .product(name: "VirtioSpec", package: "VirtioAdmin"), .product(name: "VirtioProjectCommands", package: "VirtioAdmin"),
        ]),
        .executableTarget(name: "FuzzUsedRing", dependencies: [
            .product(name: "Virtqueue", package: "VirtioAdmin"), .product(name: "VirtioSimulator", package: "VirtioAdmin"),
            .product(name: "VirtioTransport", package: "VirtioAdmin"),
        ]),
        .executableTarget(name: "FuzzPolicy", dependencies: [.product(name: "VirtioProvisioning", package: "VirtioAdmin")]),
        .executableTarget(name: "FuzzUdevEnvironment", dependencies: [.product(name: "VirtioProvisioning", package: "VirtioAdmin")]),
    ]
)
