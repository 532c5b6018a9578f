// swift-tools-version:6.1
import PackageDescription

// An appliance-style program: links only VirtioAdmin's core modules (no CLI, no
// Foundation) and provisions the VFs of the device model.
let package = Package(
    name: "EmbeddedProvisioner",
    dependencies: [.package(name: "VirtioAdmin", path: "../..")],
    targets: [
        .executableTarget(name: "EmbeddedProvisioner", dependencies: [
            .product(name: "VirtioSimulator", package: "VirtioAdmin"),
            .product(name: "VirtioTransport", package: "VirtioAdmin"),
            .product(name: "VirtioAdminDriver", package: "VirtioAdmin"),
            .product(name: "MSIXResourceManager", package: "VirtioAdmin"),
            .product(name: "FeatureBitsResourceManager", package: "VirtioAdmin"),
        ]),
    ]
)
