import Foundation
import Testing
import ResourceManager
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTestSupport

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Compiles a C plugin into a shared object (tests of the loader's checks).
func compileCPlugin(_ source: String, name: String) throws -> String {
    let directory = makeTemporaryDirectory("c-plugin")
    let sourcePath = directory + "/\(name).c"
    let output = directory + "/lib\(name).so"
    try source.write(toFile: sourcePath, atomically: true, encoding: .utf8)
    let result = try runProgram("/usr/bin/cc", ["-shared", "-fPIC", "-I", repositoryRoot + "/Sources/CVirtioAdminPlugin/include", "-o", output, sourcePath])
    #expect(result.status == 0, "cc: \(result.error)")
    return output
}

let cPluginTemplate = """
#include <string.h>
#include <stdio.h>
#include "virtio_admin_plugin.h"
static const uint16_t opcodes[] = { 0x50 };
static const char *const names[] = { "MAC_GET" };
static int32_t encode(const char *args, uint16_t *opcode, uint64_t *member, uint8_t *data, uint32_t *data_length,
                      uint32_t *result_length, char *message, uint32_t capacity) {
    const char *vf = strstr(args, "vf=");
    if (!vf) { snprintf(message, capacity, "--vf is required."); return VA_PLUGIN_BAD_ARGUMENT; }
    *opcode = 0x50; *member = (uint64_t)atoi(vf + 3) + 1; *data_length = 0; *result_length = 8;
    return VA_PLUGIN_OK;
}
static int32_t decode(const uint8_t *result, uint32_t length, char *output, uint32_t capacity, char *message, uint32_t mcap) {
    if (length < 6) { snprintf(message, mcap, "short"); return VA_PLUGIN_BAD_RESULT; }
    snprintf(output, capacity, "first=%u\\nlast=%u\\n", result[0], result[5]);
    return VA_PLUGIN_OK;
}
static const va_plugin_operation_v1 operations[] = { { "get", "first and last MAC octet", "vf", encode, decode } };
static const va_plugin_v1 table = { ABI, sizeof(va_plugin_v1), "c-mac", "0.1", "C test plugin", 1, 0, 1, opcodes, names, 1, operations };
const va_plugin_v1 *virtio_admin_plugin_entry(uint32_t host) { (void)host; return &table; }
int atoi(const char *);
"""

struct PluginLoadingTests {
    @Test func cPluginLoadsAndRunsACommand() async throws {
        let path = try compileCPlugin(cPluginTemplate.replacingOccurrences(of: "ABI,", with: "VIRTIO_ADMIN_PLUGIN_ABI_VERSION,"), name: "cmac")
        let registry = PluginRegistry()
        let plugin = try registry.load(path: path)
        #expect(plugin.name == "c-mac" && plugin.opcodes.map(\.0) == [AdminOpcode(0x50)])
        let group = try await SimulatedAdminGroup(plugins: [plugin])
        defer { group.shutDown() }
        let output = try await group.run("c-mac", "get", ["vf": ["5"]])
        #expect(output["vf"] == .int(5))
        #expect(output["first"] == .int(0x52) && output["last"] == .int(5))
        await #expect(throws: PluginError.badArgument(plugin: "c-mac", message: "--vf is required.")) {
            _ = try await group.run("c-mac", "get")
        }
    }

    @Test func abiMismatchIsAClearError() throws {
        let path = try compileCPlugin(cPluginTemplate.replacingOccurrences(of: "ABI,", with: "7u,"), name: "future")
        #expect(throws: PluginError.abiMismatch(path: path, pluginABI: 7, hostABI: 2)) { try PluginRegistry().load(path: path) }
        #expect(PluginError.abiMismatch(path: path, pluginABI: 7, hostABI: 2).description
                == "plugin \(path) was built for plugin ABI 7; this virtio-admin speaks ABI 1 to 2.")
    }

    @Test func truncatedTableIsRefused() throws {
        let path = try compileCPlugin(cPluginTemplate.replacingOccurrences(of: "ABI, sizeof(va_plugin_v1)", with: "VIRTIO_ADMIN_PLUGIN_ABI_VERSION, 8"), name: "short")
        #expect {
            try PluginRegistry().load(path: path)
        } throws: { error in
            guard case PluginError.loadFailed(_, let reason) = error else { return false }
            return reason.contains("plugin table is 8 bytes")
        }
    }

    @Test func notAPlugin() throws {
        #expect(throws: PluginError.missingEntryPoint(path: "/usr/lib/x86_64-linux-gnu/libudev.so.1")) {
            try PluginRegistry().load(path: "/usr/lib/x86_64-linux-gnu/libudev.so.1")
        }
        #expect { try PluginRegistry().load(path: "/nonexistent/plugin.so") } throws: { error in
            guard case PluginError.loadFailed(let path, _) = error else { return false }
            return path == "/nonexistent/plugin.so"
        }
    }

    @Test func duplicateNamesAreRefused() throws {
        let path = try compileCPlugin(cPluginTemplate.replacingOccurrences(of: "ABI,", with: "VIRTIO_ADMIN_PLUGIN_ABI_VERSION,"), name: "dup")
        let registry = PluginRegistry()
        try registry.load(path: path)
        #expect(throws: PluginError.duplicateName("c-mac")) { try registry.load(path: path) }
    }

    /// The example plugin package (Examples/CustomPlugin) is built and loaded, and handles a
    /// command against the device model.
    @Test(.timeLimit(.minutes(5))) func examplePluginBuildsLoadsAndRuns() async throws {
        let scratch = repositoryRoot + "/.build-examples/custom-plugin"
        // The example compiles the plugin modules it links (ABI 2, CPluginExport), which takes a
        // while: on a thread of its own (not one of the few of the concurrency pool, which the
        // timing tests running beside it need) and at the lowest CPU priority.
        let arguments = ["nice", "-n", "19", "swift", "build", "--package-path", repositoryRoot + "/Examples/CustomPlugin", "--scratch-path", scratch]
        // SwiftPM's incremental build of a path dependency can miss files the parent package
        // gained since the last build ("cannot find type ..."): once, from a clean scratch.
        let build = try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result {
                    let first = try runProgram("/usr/bin/env", arguments)
                    guard first.status != 0 else { return first }
                    try? FileManager.default.removeItem(atPath: scratch)
                    return try runProgram("/usr/bin/env", arguments)
                })
            }
        }
        #expect(build.status == 0, "swift build: \(build.output)\(build.error)")
        let registry = PluginRegistry()
        let plugin = try registry.load(path: scratch + "/debug/libMACPlugin.so")
        #expect(plugin.name == "mac" && (plugin as? DynamicPlugin)?.abiVersion == 2, "the example is an ABI 2 plugin (CPluginExport)")
        let group = try await SimulatedAdminGroup(plugins: [plugin])
        defer { group.shutDown() }
        #expect(try await group.run("mac", "get", ["vf": ["1"]])["mac"] == .string("52:54:00:3b:00:01"))
        let before = group.device.counters.adminCommands
        let set = try await group.run("mac", "set", ["vf": ["1"], "mac": ["02:aa:bb:cc:dd:ee"]])
        #expect(set["mac"] == .string("02:aa:bb:cc:dd:ee") && group.device.counters.adminCommands == before + 2, "MAC_SET then MAC_GET")
        #expect(group.device.member(1).mac == [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee])
        #expect(try await group.run("mac", "get", ["vf": ["1"]])["mac"] == .string("02:aa:bb:cc:dd:ee"))
        await #expect(throws: PluginError.badArgument(plugin: "mac", message: "--mac must be six hex octets, e.g. 52:54:00:12:34:56.")) {
            _ = try await group.run("mac", "set", ["vf": ["1"], "mac": ["zz"]])
        }
    }
}

struct PluginTrustTests {
    @Test func rootRefusesWritableOrForeignPlugins() throws {
        let path = try compileCPlugin(cPluginTemplate.replacingOccurrences(of: "ABI,", with: "VIRTIO_ADMIN_PLUGIN_ABI_VERSION,"), name: "trust")
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        guard getuid() == 0 else {
            print("skipped: the ownership checks apply when running as root")
            return
        }
        try DynamicPlugin.checkTrusted(path, effectiveUser: 0)
        try FileManager.default.setAttributes([.posixPermissions: 0o666], ofItemAtPath: path)
        #expect(throws: PluginError.untrusted(path: path, reason: "it is writable by everyone (mode 666)")) {
            try DynamicPlugin.checkTrusted(path, effectiveUser: 0)
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        try FileManager.default.setAttributes([.posixPermissions: 0o775], ofItemAtPath: directory)
        #expect(throws: PluginError.untrusted(path: directory, reason: "it is writable by its group (mode 775)")) {
            try DynamicPlugin.checkTrusted(path, effectiveUser: 0)
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory)
        chown(path, 1234, 0)
        #expect(throws: PluginError.untrusted(path: path, reason: "it is owned by uid 1234, not root")) {
            try DynamicPlugin.checkTrusted(path, effectiveUser: 0)
        }
        // A non-root user loads what it can read; the checks guard root only.
        try DynamicPlugin.checkTrusted(path, effectiveUser: 1000)
    }
}
