import PCIConfig
import VirtioSpec

/// Errors of the plugin registry and of plugin operations.
public enum PluginError: Error, Hashable, Sendable, CustomStringConvertible {
    case duplicateName(String)
    case unknownPlugin(String, known: [String])
    case unknownOperation(plugin: String, operation: String, known: [String])
    /// The device did not list every opcode the plugin needs.
    case opcodesNotListed(plugin: String, device: PCIAddress, missing: [String])
    case loadFailed(path: String, reason: String)
    case abiMismatch(path: String, pluginABI: UInt32, hostABI: UInt32)
    case missingEntryPoint(path: String)
    /// A plugin file or directory that others could have written (refused when running as root).
    case untrusted(path: String, reason: String)
    /// A bad argument, said in the plugin's words.
    case badArgument(plugin: String, message: String)
    /// A result that does not decode.
    case badResult(plugin: String, message: String)
    /// The VF index is not a VF of the group.
    case noSuchVF(device: PCIAddress, vf: Int, numVFs: Int)
    /// The device refused a command; the message says what its status and qualifier mean here.
    case refused(plugin: String, message: String)
    /// The host refused to send a run-time plugin's command (ABI 2): an opcode it did not
    /// declare, a group type or member outside the PF's group.
    case hostRefused(plugin: String, message: String)

    /// One sentence naming the plugin and what went wrong.
    public var description: String {
        switch self {
        case .duplicateName(let name): "a plugin named '\(name)' is already registered."
        case let .unknownPlugin(name, known): "no plugin named '\(name)'; known plugins: \(known.joined(separator: ", "))."
        case let .unknownOperation(plugin, operation, known): "plugin '\(plugin)' has no operation '\(operation)'; it has \(known.joined(separator: ", "))."
        case let .opcodesNotListed(plugin, device, missing):
            "\(device): plugin '\(plugin)' needs \(missing.joined(separator: ", ")), which the device does not list in LIST_QUERY."
        case let .loadFailed(path, reason): "cannot load plugin \(path): \(reason)."
        case let .abiMismatch(path, pluginABI, hostABI):
            "plugin \(path) was built for plugin ABI \(pluginABI); this virtio-admin speaks ABI 1 to \(hostABI)."
        case .missingEntryPoint(let path): "\(path) is not a virtio-admin plugin: it does not export virtio_admin_plugin_entry."
        case let .untrusted(path, reason): "refusing to load a plugin from \(path): \(reason), and virtio-admin runs as root."
        case let .badArgument(plugin, message): "\(plugin): \(message)"
        case let .badResult(plugin, message): "\(plugin): the device's result does not decode: \(message)"
        case let .refused(plugin, message): "\(plugin): \(message)"
        case let .hostRefused(plugin, message): "\(plugin): refused by virtio-admin: \(message)"
        case let .noSuchVF(device, vf, numVFs):
            numVFs == 0 ? "\(device): VF \(vf) does not exist (the PF has no VFs enabled)."
                : "\(device): VF \(vf) does not exist (VFs are 0 to \(numVFs - 1))."
        }
    }
}
