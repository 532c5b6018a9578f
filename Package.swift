// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "VirtioAdmin",
    // The public API (docs/public-api.md): these products, and in them only what
    // scripts/public-api.list keeps public. Every other declaration is `package` access
    // (scripts/api-access rewrites it), and no other target is a product.
    products: [
        // The command-line tool.
        .executable(name: "virtio-admin", targets: ["VirtioAdminCLI"]),
        // The composition an appliance links: AdminGroup, the openers, Provisioner, policy apply,
        // the provisioning service; with the value types its signatures use.
        .library(name: "VirtioAdmin", targets: ["VirtioAdmin", "VirtioProvisioning", "ResourceManager", "VirtioAdminDriver", "PCIConfig"]),
        // The plugin kit: what a resource-manager plugin needs, with VirtioSpec.
        .library(name: "VirtioAdminPluginKit", targets: ["ResourceManager", "VirtioAdminDriver", "PCIConfig"]),
        // The spec layer: constants, layouts, the admin command and result headers.
        .library(name: "VirtioSpec", targets: ["VirtioSpec"]),
        // The device model, and a test kit that opens its admin queue for a plugin's tests.
        .library(name: "VirtioSimulator", targets: ["VirtioSimulator"]),
        .library(name: "VirtioAdminTestKit", targets: ["VirtioAdminTestKit"]),
        // The run-time plugin ABI: a C header plugin authors include.
        .library(name: "CVirtioAdminPlugin", targets: ["CVirtioAdminPlugin"]),
        // Not API (a leading underscore): entry points for this repository's Benchmarks/ and
        // Fuzz/ packages, which measure and fuzz code that is `package` access.
        .library(name: "_VirtioAdminBenchmarkSupport", targets: ["BenchmarkSupport"]),
        .library(name: "_VirtioAdminFuzzSupport", targets: ["FuzzSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // Pure spec layer: constants, layouts, little-endian helpers. No I/O, no Foundation.
        .target(name: "VirtioSpec"),
        // The project-defined admin commands (MSI-X, feature bits, the example's VF MAC): not
        // ratified, so not in VirtioSpec; the plugins and the device model share the table.
        .target(name: "VirtioProjectCommands", dependencies: ["VirtioSpec"]),
        // Pure PCI layer: addresses and config-space decoding. No I/O, no Foundation.
        .target(name: "PCIConfig", dependencies: ["VirtioSpec"]),
        // libudev, as a system library (apt-get install libudev-dev pkg-config).
        .systemLibrary(name: "CUdev", pkgConfig: "libudev", providers: [.apt(["libudev-dev"])]),
        // VFIO ioctl numbers and wrappers, from <linux/vfio.h>.
        .target(name: "CLinuxVFIO"),
        // Linux platform: sysfs walker, libudev enumeration, binding with an in-use guard,
        // BAR mapping (sysfs resourceN, VFIO regions), DMA (VFIO type-1, pagemap). Glibc only.
        .target(name: "VirtioLinux", dependencies: ["VirtioSpec", "PCIConfig", "CUdev", "CLinuxVFIO", "VirtioTransport", "VirtioSystem"]),
        // The operating system: the only Swift module that imports Glibc. Every system call
        // (EINTR retried, errno typed), files, memory maps, ioctl, lock files, dlopen, Unix
        // sockets, poll, threads, the pthread lock (visible to ThreadSanitizer), monotonic time.
        .target(name: "CVirtioSystem"),
        .target(name: "VirtioSystem", dependencies: ["CVirtioSystem", .product(name: "SystemPackage", package: "swift-system")]),
        // C shim: volatile MMIO access, atomics for shared ring fields, per-architecture barriers.
        .target(name: "CVolatile"),
        // Register and DMA protocols, and the modern virtio-PCI transport. No Foundation.
        .target(name: "VirtioTransport", dependencies: ["VirtioSpec", "PCIConfig", "CVolatile"]),
        // The split-virtqueue engine (driver side) and the ring layout the device model shares.
        .target(name: "Virtqueue", dependencies: ["VirtioSpec", "VirtioTransport", "CVolatile"]),
        // The admin-queue driver: ADMIN_VQ, LIST_QUERY/LIST_USE, many commands in flight.
        .target(name: "VirtioAdminDriver", dependencies: ["VirtioSpec", "PCIConfig", "VirtioTransport", "Virtqueue", "VirtioSystem"]),
        // The conformance checks of a device's admin facility (library; the CLI's `conformance`).
        .target(name: "VirtioConformance", dependencies: ["VirtioProjectCommands", "VirtioAdminDriver", "VirtioTransport", "VirtioSpec", "PCIConfig"]),
        // The run-time plugin ABI (a C header plugin authors include).
        .target(name: "CVirtioAdminPlugin"),
        // The command-handler protocol, the plugin registry, the run-time loader.
        .target(name: "ResourceManager", dependencies: ["VirtioSpec", "PCIConfig", "VirtioAdminDriver", "CVirtioAdminPlugin", "VirtioSystem"]),
        // Built-in resource-manager plugins.
        .target(name: "MSIXResourceManager", dependencies: ["VirtioProjectCommands", "ResourceManager", "VirtioAdminDriver", "VirtioSpec"], path: "Plugins/MSIXResourceManager"),
        .target(name: "FeatureBitsResourceManager", dependencies: ["VirtioProjectCommands", "ResourceManager", "VirtioAdminDriver", "VirtioSpec"], path: "Plugins/FeatureBitsResourceManager"),
        // Built-in plugins of the ratified virtio 1.3/1.4 commands.
        .target(name: "CapabilitiesResourceManager", dependencies: ["ResourceManager", "VirtioAdminDriver", "VirtioSpec"], path: "Plugins/CapabilitiesResourceManager"),
        .target(name: "ResourceObjectsResourceManager", dependencies: ["ResourceManager", "VirtioAdminDriver", "VirtioSpec"], path: "Plugins/ResourceObjectsResourceManager"),
        .target(name: "DevicePartsResourceManager", dependencies: ["ResourceManager", "ResourceObjectsResourceManager", "VirtioAdminDriver", "VirtioSpec", "VirtioSystem"], path: "Plugins/DevicePartsResourceManager"),
        .target(name: "LegacyAccessResourceManager", dependencies: ["ResourceManager", "VirtioAdminDriver", "VirtioSpec"], path: "Plugins/LegacyAccessResourceManager"),
        // The device model: simulated virtio PCI functions and their fake sysfs tree.
        .target(name: "VirtioSimulator", dependencies: ["VirtioProjectCommands", "VirtioSpec", "PCIConfig", "VirtioTransport", "Virtqueue", "CVolatile", "VirtioSystem"]),
        // Provisioning policy (a TOML subset, read once by its own parser), its checker and planner, and the udev event handling.
        .target(name: "VirtioProvisioning", dependencies: ["VirtioProjectCommands", 
            "VirtioSpec", "PCIConfig", "VirtioLinux", "VirtioAdminDriver", "ResourceManager", "MSIXResourceManager", "FeatureBitsResourceManager",
        ]),
        // The library an appliance, the CLI and the service use: one owner per PF's admin queue
        // (opened through the Linux or the simulated opener), bulk provisioning, policy apply,
        // the provisioning service. No Foundation.
        .target(name: "VirtioAdmin", dependencies: [
            "VirtioSpec", "PCIConfig", "VirtioLinux", "VirtioSimulator", "VirtioTransport", "VirtioAdminDriver", "ResourceManager",
            "MSIXResourceManager", "FeatureBitsResourceManager", "VirtioProvisioning", "VirtioSystem",
            "CapabilitiesResourceManager", "ResourceObjectsResourceManager", "DevicePartsResourceManager", "LegacyAccessResourceManager",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // A test kit for plugin authors: the device model with its admin queue open.
        .target(name: "VirtioAdminTestKit", dependencies: ["VirtioAdmin", "VirtioSimulator", "VirtioAdminDriver", "ResourceManager", "VirtioTransport", "PCIConfig", "VirtioSpec", "VirtioSystem"]),
        .executableTarget(
            name: "VirtioAdminCLI",
            dependencies: [
                "VirtioSpec", "VirtioProjectCommands", "PCIConfig", "VirtioLinux", "VirtioSimulator", "VirtioTransport", "VirtioAdminDriver",
                "ResourceManager", "MSIXResourceManager", "FeatureBitsResourceManager", "VirtioProvisioning", "VirtioSystem", "VirtioAdmin", "VirtioConformance",
                "CapabilitiesResourceManager", "ResourceObjectsResourceManager", "DevicePartsResourceManager", "LegacyAccessResourceManager",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Not API: the scenarios Benchmarks/ measures and the bodies of Fuzz/'s targets. They
        // live in those folders but build here, as they reach `package` declarations.
        .target(name: "BenchmarkSupport", dependencies: [
            "VirtioAdmin", "VirtioProvisioning", "VirtioSimulator", "VirtioTransport", "VirtioAdminDriver", "ResourceManager",
            "MSIXResourceManager", "FeatureBitsResourceManager", "VirtioLinux", "VirtioSystem", "PCIConfig", "VirtioSpec",
        ], path: "Benchmarks/Sources/BenchmarkSupport"),
        .target(name: "FuzzSupport", dependencies: ["PCIConfig", "VirtioSpec", "VirtioProjectCommands", "Virtqueue", "VirtioSimulator", "VirtioTransport"],
                path: "Fuzz/Sources/FuzzSupport"),
        // Test helpers: an lspci output parser (the independent decoder), process runner, temp dirs.
        .target(name: "VirtioTestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "VirtioSpecTests", dependencies: ["VirtioSpec"]),
        .testTarget(name: "PCIConfigTests", dependencies: ["PCIConfig", "VirtioSpec", "VirtioSimulator", "VirtioTestSupport"]),
        .testTarget(name: "VirtioLinuxTests", dependencies: ["VirtioLinux", "PCIConfig", "VirtioSimulator", "VirtioTestSupport", "CLinuxVFIO", "VirtioSystem"]),
        .testTarget(name: "VirtioSystemTests", dependencies: ["VirtioSystem", .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(name: "TransportTests", dependencies: ["VirtioTransport", "Virtqueue", "VirtioSimulator", "PCIConfig", "VirtioSpec"]),
        .testTarget(name: "AdminDriverTests", dependencies: ["VirtioAdminDriver", "VirtioAdminTestKit", "VirtioSimulator", "VirtioTransport", "VirtioSpec", "ResourceManager", "MSIXResourceManager", "FeatureBitsResourceManager", "VirtioSystem", "VirtioConformance", "VirtioProvisioning"]),
        .testTarget(name: "MSIXResourceManagerTests", dependencies: ["VirtioProjectCommands", "MSIXResourceManager", "VirtioAdminTestKit", "VirtioSimulator", "VirtioAdminDriver", "VirtioSpec", "ResourceManager", "VirtioTransport"], path: "Tests/Plugins/MSIXResourceManagerTests"),
        .testTarget(name: "FeatureBitsResourceManagerTests", dependencies: ["FeatureBitsResourceManager", "VirtioAdminTestKit", "VirtioSimulator", "VirtioAdminDriver", "VirtioSpec", "ResourceManager", "VirtioTransport"], path: "Tests/Plugins/FeatureBitsResourceManagerTests"),
        .testTarget(name: "RatifiedPluginTests", dependencies: [
            "CapabilitiesResourceManager", "ResourceObjectsResourceManager", "DevicePartsResourceManager", "LegacyAccessResourceManager",
            "VirtioAdminTestKit", "VirtioSimulator", "VirtioAdminDriver", "VirtioSpec", "ResourceManager", "VirtioTransport", "VirtioTestSupport", "Virtqueue",
        ], path: "Tests/Plugins/RatifiedPluginTests"),
        .testTarget(name: "ResourceManagerTests", dependencies: ["ResourceManager", "VirtioAdminTestKit", "VirtioAdminDriver", "VirtioSimulator", "VirtioSpec", "VirtioTestSupport"]),
        .testTarget(name: "ProvisioningTests", dependencies: ["VirtioProvisioning", "VirtioSpec", "PCIConfig"]),
        .testTarget(name: "VirtioAdminTests", dependencies: ["VirtioAdmin", "VirtioAdminTestKit", "VirtioTestSupport", "VirtioLinux", "VirtioProvisioning", "VirtioSimulator", "VirtioAdminDriver", "ResourceManager", "PCIConfig", "VirtioSpec",
                                                      .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "CLITests", dependencies: ["VirtioAdminCLI", "VirtioSimulator", "VirtioLinux", "VirtioTestSupport"]),
    ]
)
