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
        // The plugin kit (the plugin protocol, CPluginExport, the admin command) and VirtioSpec;
        // only the C table of plugin ABI 2 crosses into the host. A real plugin would name a release.
        .package(name: "VirtioAdmin", path: "../.."),
    ],
    targets: [
        .target(name: "MACPlugin", dependencies: [
            .product(name: "VirtioAdminPluginKit", package: "VirtioAdmin"),
            .product(name: "VirtioSpec", package: "VirtioAdmin"),
        ]),
    ]
)
