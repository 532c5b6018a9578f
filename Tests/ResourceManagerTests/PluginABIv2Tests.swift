import Foundation
import Testing
import ResourceManager
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTestSupport

/// ABI 2 C plugins: an operation that chains commands through host->run, with structured
/// arguments; and ones whose commands the host refuses.
let cPluginV2Template = """
#include <string.h>
#include <stdio.h>
#include "virtio_admin_plugin.h"
static const uint16_t opcodes[] = { 0x50, 0x40 };
static const char *const names[] = { "MAC_GET", "MSIX_GET" };
static const char *argument(const va_arguments_v2 *args, const char *name) {
    for (uint32_t i = 0; i < args->count; i++) if (strcmp(args->items[i].name, name) == 0) return args->items[i].value;
    return NULL;
}
static int32_t chain(const va_host_v2 *host, const void *ctx, const va_arguments_v2 *args, char *output, uint32_t ocap, char *message, uint32_t mcap) {
    (void)ctx;
    if (args->vf < 0) { snprintf(message, mcap, "--vf is required."); return VA_PLUGIN_BAD_ARGUMENT; }
    uint8_t mac[8], msix[8];
    va_command_v2 get_mac = { OPCODE1, GROUP1, 0, MEMBER1, NULL, mac, sizeof mac, 0, 0, 0, 0 };
    int32_t rc = host->run(host->context, &get_mac, message, mcap);
    if (rc != VA_HOST_OK) return rc == VA_HOST_REFUSED ? VA_PLUGIN_HOST_REFUSED : VA_PLUGIN_FAILED;
    va_command_v2 get_msix = { 0x40, 1, 0, (uint64_t)args->vf + 1, NULL, msix, sizeof msix, 0, 0, 0, 0 };
    rc = host->run(host->context, &get_msix, message, mcap);
    if (rc != VA_HOST_OK) return rc == VA_HOST_REFUSED ? VA_PLUGIN_HOST_REFUSED : VA_PLUGIN_FAILED;
    if (get_mac.status != 0) { snprintf(message, mcap, "MAC_GET failed with status %u", get_mac.status); return VA_PLUGIN_DEVICE_REFUSED; }
    const char *label = argument(args, "label");
    snprintf(output, ocap, "last=%u\\nvectors=%u\\nlabel=%s\\npf=%s\\nlisted=%d\\nnumvfs=%llu\\n", mac[5], msix[0] | (msix[1] << 8),
             label ? label : "-", host->pf, (int)(host->opcode_words > 1 && (host->supported[1] & 1)),
             (unsigned long long)args->num_vfs);
    return VA_PLUGIN_OK;
}
static const va_plugin_operation_v2 operations[] = { { "chain", "MAC and MSI-X of a VF", "vf,label?", NULL, chain } };
static const va_plugin_v2 table = { VIRTIO_ADMIN_PLUGIN_ABI_VERSION_2, sizeof(va_plugin_v2), "c-chain", "0.2", "ABI 2 test plugin",
                                    VA_GROUP_SRIOV, 0, 2, opcodes, names, 1, operations };
const void *virtio_admin_plugin_entry(uint32_t host) { return host >= 2 ? (const void *)&table : NULL; }
"""

func v2Plugin(opcode: String = "0x50", group: String = "1", member: String = "(uint64_t)args->vf + 1", name: String) throws -> String {
    try compileCPlugin(cPluginV2Template.replacingOccurrences(of: "OPCODE1", with: opcode).replacingOccurrences(of: "GROUP1", with: group)
                        .replacingOccurrences(of: "MEMBER1", with: member), name: name)
}

struct PluginABIv2Tests {
    @Test func aCPluginChainsTwoCommandsThroughTheHost() async throws {
        let registry = PluginRegistry()
        let plugin = try registry.load(path: try v2Plugin(name: "chain"))
        #expect((plugin as? DynamicPlugin)?.abiVersion == 2)
        #expect(plugin.opcodes.map(\.0) == [AdminOpcode(0x50), AdminOpcode(0x40)] && plugin.groupTypes == [.srIOV])
        let group = try await SimulatedAdminGroup(plugins: [plugin])
        defer { group.shutDown() }
        let before = group.device.counters.adminCommands
        let output = try await group.run("c-chain", "chain", ["vf": ["4"], "label": ["two commands"]])
        #expect(group.device.counters.adminCommands == before + 2, "MAC_GET and MSIX_GET, one operation")
        #expect(output["vf"] == .int(4) && output["last"] == .int(4) && output["vectors"] == .int(2))
        #expect(output["label"] == .string("two commands") && output["pf"] == .string("0000:3b:00.0") && output["numvfs"] == .int(8))
        #expect(output["listed"] == .int(1), "the plugin sees the LIST_QUERY bitmap (0x40 listed)")
        await #expect(throws: PluginError.badArgument(plugin: "c-chain", message: "--vf is required.")) {
            _ = try await group.run("c-chain", "chain")
        }
        await #expect(throws: PluginError.noSuchVF(device: group.device.pfAddress, vf: 9, numVFs: 8)) {
            _ = try await group.run("c-chain", "chain", ["vf": ["9"]])
        }
    }

    /// The host retries EAGAIN for an ABI 2 plugin's commands, as the driver does for
    /// built-in ones: the plugin gets the answer that followed.
    @Test func theHostRetriesEAGAINForAPlugin() async throws {
        let registry = PluginRegistry()
        let plugin = try registry.load(path: try v2Plugin(name: "eagain"))
        let group = try await SimulatedAdminGroup(plugins: [plugin])
        defer { group.shutDown() }
        let before = group.device.counters.adminCommands
        group.device.setFault(.transientEAGAIN)  // the next three commands are answered EAGAIN
        let output = try await group.run("c-chain", "chain", ["vf": ["4"]])
        #expect(output["last"] == .int(4) && output["vectors"] == .int(2))
        #expect(group.device.counters.adminCommands == before + 5, "MAC_GET three times more, then MSIX_GET")
    }

    @Test func anUndeclaredOpcodeIsRefusedByTheHost() async throws {
        let plugin = try PluginRegistry().load(path: try v2Plugin(opcode: "0x41", name: "rogue"))
        let group = try await SimulatedAdminGroup(plugins: [plugin])
        defer { group.shutDown() }
        let before = group.device.counters.adminCommands
        await #expect(throws: PluginError.hostRefused(plugin: "c-chain", message: "plugin 'c-chain' sent MSIX_SET (opcode 0x0041), which it did not declare (it declared MAC_GET (0x0050), MSIX_GET (0x0040)).")) {
            _ = try await group.run("c-chain", "chain", ["vf": ["1"]])
        }
        #expect(group.device.counters.adminCommands == before, "nothing reached the device")
    }

    @Test func groupAndMemberAreCheckedAgainstThePFsGroup() async throws {
        let member = try PluginRegistry().load(path: try v2Plugin(member: "99", name: "member"))
        let selfGroup = try PluginRegistry().load(path: try v2Plugin(group: "0", member: "0", name: "selfgroup"))
        for (plugin, message) in [
            (member, "plugin 'c-chain' sent MAC_GET to member 99, but 0000:3b:00.0's SR-IOV group has members 1 to 8."),
            (selfGroup, "plugin 'c-chain' sent MAC_GET to group type 0, which it did not declare or 0000:3b:00.0 does not own."),
        ] {
            let group = try await SimulatedAdminGroup(plugins: [plugin])
            defer { group.shutDown() }
            let before = group.device.counters.adminCommands
            await #expect(throws: PluginError.hostRefused(plugin: "c-chain", message: message)) {
                _ = try await group.run("c-chain", "chain", ["vf": ["0"]])
            }
            #expect(group.device.counters.adminCommands == before)
        }
    }
}
