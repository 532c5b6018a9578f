// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for VirtioAdmin's parsers of untrusted input. Run them with
// ../scripts/fuzz (FUZZ_SECONDS per target). Kept out of the main build.
let package = Package(
    name: "VirtioAdminFuzz",
    dependencies: [.package(name: "VirtioAdmin", path: "..")],
    // FuzzConfigSpace, FuzzAdminResult and FuzzUsedRing call their bodies in Sources/FuzzSupport,
    // which builds in the main package (product _VirtioAdminFuzzSupport, not API) because it
    // reaches `package` declarations; the policy and udev targets use the public API.
    targets: [
        .executableTarget(name: "FuzzConfigSpace", dependencies: [.product(name: "_VirtioAdminFuzzSupport", package: "VirtioAdmin")]),
        .executableTarget(name: "FuzzAdminResult", dependencies: [.product(name: "_VirtioAdminFuzzSupport", package: "VirtioAdmin")]),
        .executableTarget(name: "FuzzUsedRing", dependencies: [.product(name: "_VirtioAdminFuzzSupport", package: "VirtioAdmin")]),
        .executableTarget(name: "FuzzPolicy", dependencies: [.product(name: "VirtioAdmin", package: "VirtioAdmin")]),
        .executableTarget(name: "FuzzUdevEnvironment", dependencies: [.product(name: "VirtioAdmin", package: "VirtioAdmin")]),
    ]
)
