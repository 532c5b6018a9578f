import PCIConfig
import VirtioSpec

/// Why a udev environment was refused.
public struct UdevEventError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The environment variable refused (`DEVPATH`).
    public var variable: String
    /// Why, in words.
    public var message: String
    /// `refusing udev event: VARIABLE why`.
    public var description: String { "refusing udev event: \(variable) \(message)" }
}

/// A udev event for a PCI function, validated: every value the helper uses is checked
/// before anything is touched.
public struct UdevEvent: Sendable, Hashable {
    /// The udev ACTION values the helper accepts.
    public enum Action: String, Sendable, CaseIterable { case add, remove, change, bind, unbind }
    /// ACTION.
    public var action: Action
    /// DEVPATH, under /devices.
    public var devpath: String
    /// The function's address (PCI_SLOT_NAME, matching DEVPATH's last component).
    public var address: PCIAddress
    /// The vendor id of PCI_ID, when given.
    public var vendorID: UInt16?
    /// The device id of PCI_ID, when given.
    public var deviceID: UInt16?

    /// Validates `environment` (ACTION, SUBSYSTEM, DEVPATH, PCI_SLOT_NAME, PCI_ID).
    public init(environment: [String: String]) throws(UdevEventError) {
        func value(_ name: String) throws(UdevEventError) -> String {
            guard let value = environment[name], !value.isEmpty else { throw UdevEventError(variable: name, message: "is missing") }
            guard value.utf8.count <= 512 else { throw UdevEventError(variable: name, message: "is longer than 512 bytes") }
            guard value.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else { throw UdevEventError(variable: name, message: "holds control or non-ASCII characters") }
            return value
        }
        let actionText = try value("ACTION")
        guard let action = Action(rawValue: actionText) else {
            throw UdevEventError(variable: "ACTION", message: "'\(actionText)' is not one of \(Action.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let subsystem = try value("SUBSYSTEM")
        guard subsystem == "pci" else { throw UdevEventError(variable: "SUBSYSTEM", message: "'\(subsystem)' is not pci") }
        let devpath = try value("DEVPATH")
        guard devpath.hasPrefix("/devices/") else { throw UdevEventError(variable: "DEVPATH", message: "'\(devpath)' is not under /devices") }
        let components = devpath.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst()
        guard components.allSatisfy({ !$0.isEmpty && !$0.elementsEqual(".".utf8) && !$0.elementsEqual("..".utf8) }),
              devpath.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x3a) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2f || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d })
        else { throw UdevEventError(variable: "DEVPATH", message: "'\(devpath)' has an empty, '.' or '..' component or a character outside [A-Za-z0-9:._/-]") }
        guard let last = components.last, let address = PCIAddress(String(decoding: last, as: UTF8.self)) else {
            throw UdevEventError(variable: "DEVPATH", message: "'\(devpath)' does not end in a PCI address")
        }
        if let slot = environment["PCI_SLOT_NAME"] {
            guard let slotAddress = PCIAddress(slot) else { throw UdevEventError(variable: "PCI_SLOT_NAME", message: "'\(slot)' is not a PCI address") }
            guard slotAddress == address else { throw UdevEventError(variable: "PCI_SLOT_NAME", message: "'\(slot)' does not match DEVPATH (\(address))") }
        }
        if let id = environment["PCI_ID"] {
            let parts = id.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, parts.allSatisfy({ $0.count == 4 }), let vendor = UInt16(parts[0], radix: 16), let device = UInt16(parts[1], radix: 16) else {
                throw UdevEventError(variable: "PCI_ID", message: "'\(id)' is not VVVV:DDDD")
            }
            vendorID = vendor
            deviceID = device
        }
        self.action = action
        self.devpath = devpath
        self.address = address
    }

    /// The event as one line for the serve socket (re-validated on the other side).
    public var wireLine: String {
        var line = "ACTION=\(action.rawValue) SUBSYSTEM=pci DEVPATH=\(devpath) PCI_SLOT_NAME=\(address)"
        if let vendorID, let deviceID { line += " PCI_ID=\(String(hex(vendorID, width: 4).dropFirst(2))):\(String(hex(deviceID, width: 4).dropFirst(2)))" }
        return line
    }

    /// Parses a wire line back into an environment: space-separated NAME=value words (a
    /// word without a name or a value is skipped). One pass over the bytes: the service
    /// reads every event's line on one thread.
    public static func environment(fromWire line: String) -> [String: String] {
        var environment: [String: String] = [:]
        for word in line.utf8.split(separator: UInt8(ascii: " ")) {
            guard let equals = word.firstIndex(of: UInt8(ascii: "=")), equals != word.startIndex else { continue }
            let value = word[word.index(after: equals)...]
            guard !value.isEmpty else { continue }
            environment[String(decoding: word[..<equals], as: UTF8.self)] = String(decoding: value, as: UTF8.self)
        }
        return environment
    }
}
