// swift-tools-version:6.1
import PackageDescription

// An out-of-tree VirtioAdmin plugin: VF MAC address provisioning over the admin queue,
// built as a shared library that `virtio-admin --plugin PATH` loads at run time.
let package = Package(
    name: "MACPlugin",
    products: [
        .library(name: "MACPlugin", type: .dynamic, targets: ["MACPlugin"]),
    ],
    dependencies: [
        // Only the C header of the plugin ABI is used; a real plugin would name a release.
        .package(name: "VirtioAdmin", path: "../.."),
    ],
    targets: [
        .target(name: "MACPlugin", dependencies: [.product(name: "CVirtioAdminPlugin", package: "VirtioAdmin")]),
    ]
)
