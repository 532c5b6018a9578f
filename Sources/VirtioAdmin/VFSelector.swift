import PCIConfig
import ResourceManager

/// `--vf` as a user gives it, read once at the command line: a VF index (`3`, as sysfs
/// `virtfn3`) or a VF's PCI address (resolved under its PF by ``AdminGroup/vf(_:)``).
public enum VFSelector: Sendable, Hashable, CustomStringConvertible {
    case index(VFNumber)
    case address(PCIAddress)

    /// Reads `--vf` text.
    /// - Throws: the one sentence that says what `--vf` takes.
    public init(parsing text: String) throws(VFSelectorError) {
        if let vf = VFNumber(text) {
            self = .index(vf)
        } else if Int(text) != nil {
            throw VFSelectorError(message: VFNumber.notAnIndex(text))  // a number, but negative or too large
        } else if let address = PCIAddress(text) {
            self = .address(address)
        } else {
            throw VFSelectorError(message: "--vf '\(text)' is neither a VF index (0, 1, …) nor a PCI address.")
        }
    }

    public var description: String {
        switch self {
        case .index(let vf): "\(vf.index)"
        case .address(let address): "\(address)"
        }
    }
}

/// `--vf` text that names no VF.
public struct VFSelectorError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
