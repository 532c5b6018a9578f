import PCIConfig

/// An error the CLI reports as one sentence (ArgumentParser prints `Error: <description>`).
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }

    static func badAddress(_ text: String) -> CLIError {
        CLIError("'\(text)' is not a PCI address; expected DDDD:BB:DD.F or BB:DD.F in hex, for example 0000:00:03.0.")
    }
}

/// Parses a PCI address argument or throws a one-sentence error.
func parseAddress(_ text: String) throws -> PCIAddress {
    guard let address = PCIAddress(text) else { throw CLIError.badAddress(text) }
    return address
}
