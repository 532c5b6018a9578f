// swift-tools-version:6.1
import PackageDescription

// An appliance-style program: links the VirtioAdmin library (no CLI, no Foundation) and
// provisions the VFs of the device model, or of a real PF named on the command line.
let package = Package(
    name: "EmbeddedProvisioner",
    dependencies: [.package(name: "VirtioAdmin", path: "../..")],
    targets: [
        .executableTarget(name: "EmbeddedProvisioner", dependencies: [
            .product(name: "VirtioAdmin", package: "VirtioAdmin"),
            .product(name: "VirtioSimulator", package: "VirtioAdmin"),
            .product(name: "VirtioSpec", package: "VirtioAdmin"),
        ]),
    ]
)
