import ArgumentParser
import DevicePartsResourceManager
import Foundation
import VirtioSpec

// The CLI of the ratified-command plugins (caps, parts, mode). Each subcommand maps its
// arguments onto the plugin operation and runs it with `runPluginOperation`; the plugins own
// the commands, layouts, checks and messages. Legacy access and resource objects have no
// subcommand of their own: `virtio-admin legacy read-common PF --vf N --offset 18`,
// `virtio-admin resobj create PF --vf N --type 0 --id 0 --kind get` (the generic runner).

struct CapsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caps",
        abstract: "List the device's capabilities (CAP_ID_LIST_QUERY, DEVICE_CAP_GET in the self group; plugin 'caps').",
        discussion: """
            VIRTIO_DEV_PARTS_CAP is decoded (get/set object limits), the net flow-filter ones by name.
            Opening the PF already did the handshake Linux does: DRIVER_CAP_SET with min(device, wanted).
            JSON: {device, capabilities: [{id, name, getLimit?, setLimit?, …}]}.
            """)
    @Argument(help: ArgumentHelp("The PF's PCI address.", valueName: "PF")) var pf: String
    @OptionGroup var options: AdminOptions
    func run() async throws { try await runPluginOperation(plugin: "caps", operation: "show", pf: pf, options: options, arguments: [:]) }
}

struct PartsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parts",
        abstract: "Save and restore a VF's state as device parts (virtio 1.4; plugin 'parts').",
        discussion: "--vf N counts like sysfs virtfnN (0-based); the member id on the wire is N + 1.",
        subcommands: [Save.self, Restore.self, Show.self])

    struct Save: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop the VF, read all its parts into FILE (header: PF, VF, device type), resume it.",
            discussion: "Commands: DEV_MODE_SET stop, RESOURCE_OBJ_CREATE (DEV_PARTS, get), DEV_PARTS_METADATA_GET SIZE, DEV_PARTS_GET ALL, RESOURCE_OBJ_DESTROY, DEV_MODE_SET resume. JSON: {vf, file, parts, bytes, stopped}.")
        @Argument(help: ArgumentHelp("The PF's PCI address.", valueName: "PF")) var pf: String
        @Option(help: ArgumentHelp("VF index (0-based) or VF address.", valueName: "N")) var vf: String
        @Argument(help: ArgumentHelp("File to write.", valueName: "FILE")) var file: String
        @Flag(name: .customLong("keep-stopped"), help: "Leave the VF stopped after reading its parts.") var keepStopped = false
        @OptionGroup var options: AdminOptions
        func run() async throws {
            try await runPluginOperation(plugin: "parts", operation: "save", pf: pf, options: options,
                                         arguments: ["vf": [vf], "file": [file], "keep-stopped": [keepStopped ? "yes" : "no"]])
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop the VF, set the parts in FILE, resume it (a VF of the same device type; the device checks its device features).",
            discussion: "Commands: DEV_MODE_SET stop, RESOURCE_OBJ_CREATE (DEV_PARTS, set), DEV_PARTS_SET, RESOURCE_OBJ_DESTROY, DEV_MODE_SET resume. JSON: {vf, file, fromPF, fromVF}.")
        @Argument(help: ArgumentHelp("The PF's PCI address.", valueName: "PF")) var pf: String
        @Option(help: ArgumentHelp("VF index (0-based) or VF address.", valueName: "N")) var vf: String
        @Argument(help: ArgumentHelp("File written by 'parts save'.", valueName: "FILE")) var file: String
        @OptionGroup var options: AdminOptions
        func run() async throws {
            try await runPluginOperation(plugin: "parts", operation: "restore", pf: pf, options: options, arguments: ["vf": [vf], "file": [file]])
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decode a parts file: features, common config, device status, each virtqueue.",
            discussion: "JSON: {pf, vf, type, parts: [{type, name, optional, selector, length, text}]}.")
        @Argument(help: ArgumentHelp("File written by 'parts save'.", valueName: "FILE")) var file: String
        @Flag(help: "Print JSON instead of text.") var json = false
        func run() throws {
            let parts: DevicePartsFile
            do { parts = try DevicePartsResourceManager.readFile(file) } catch { throw CLIError(error.description) }
            guard json else { print(parts.description); return }
            try printJSON(JSONValue.object([
                ("pf", .string(parts.pf)), ("vf", .int(parts.vf)), ("type", .string(parts.deviceType.name)),
                ("parts", .array(parts.decodedParts.map { part in
                    .object([("type", .int(Int(part.type))), ("name", .string(DevicePartType.name(part.type))),
                             ("optional", .bool(part.flags & DevicePartsLayout.partOptional != 0)), ("selector", .string(hexBytes(part.selector))),
                             ("length", .int(part.value.count)), ("text", .string(part.describe(deviceType: parts.deviceType)))])
                })),
            ]))
        }
    }
}

struct ModeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mode",
        abstract: "Stop or resume a VF (DEV_MODE_SET flags 0x01 / 0x00; plugin 'parts').",
        discussion: "The spec defines two modes: STOPPED (bit 0) and running. JSON: {vf, stopped}.")
    @Argument(help: ArgumentHelp("The PF's PCI address.", valueName: "PF")) var pf: String
    @Option(help: ArgumentHelp("VF index (0-based) or VF address.", valueName: "N")) var vf: String
    @Argument(help: ArgumentHelp("stop or resume.", valueName: "MODE")) var mode: String
    @OptionGroup var options: AdminOptions
    func validate() throws {
        guard mode == "stop" || mode == "resume" else { throw ValidationError("the mode is 'stop' or 'resume', not '\(mode)'.") }
    }
    func run() async throws {
        try await runPluginOperation(plugin: "parts", operation: "mode", pf: pf, options: options, arguments: ["vf": [vf], "state": [mode]])
    }
}
