import VirtioSpec

/// A VF as a user names it: its 0-based index under its PF (sysfs `virtfnN`). It is read
/// from text once, where the text comes in (the command line, a host's string arguments, a
/// C plugin's `vf` field); everything after carries this value. Its member id on the wire
/// comes from ``GroupMemberID/init(vfIndex:)``, the one place of the +1 rule.
public struct VFNumber: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The 0-based index (sysfs `virtfnN`).
    public let index: Int

    /// The largest index a member id can name in a 16-bit VF count.
    public static let maximumIndex = Int(UInt16.max) - 1

    /// `nil` unless `index` is 0 ... ``maximumIndex``.
    public init?(index: Int) {
        guard (0...Self.maximumIndex).contains(index) else { return nil }
        self.index = index
    }

    /// Reads a decimal VF index (`"3"`); `nil` when the text is not one.
    public init?(_ text: String) {
        guard let index = Int(text) else { return nil }
        self.init(index: index)
    }

    /// The member id of this VF in its PF's SR-IOV group.
    public var member: GroupMemberID { GroupMemberID(vfIndex: index) }

    public var description: String { "VF \(index)" }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.index < rhs.index }

    /// The sentence for `--vf` text that is not a VF index.
    public static func notAnIndex(_ text: String) -> String { "--vf must be a VF index (0, 1, …), not '\(text)'." }
}
