/// Split-virtqueue layout. Spec: §2.7 "Split Virtqueues"; digest §6.
public enum SplitQueueLayout {
    /// Largest split queue size (a power of two).
    public static let maximumSize = 32768

    /// `struct virtq_desc`: 16 bytes, table 16-byte aligned.
    public static let descriptorSize = 16
    public static let descriptorAlignment = 16
    public static let descriptorAddress = 0
    public static let descriptorLength = 8
    public static let descriptorFlags = 12
    public static let descriptorNext = 14

    /// `struct virtq_avail` (driver area): flags, idx, ring[size], used_event; 2-aligned.
    public static let availAlignment = 2
    public static let availFlags = 0
    public static let availIndex = 2
    public static let availRing = 4
    public static func availSize(queueSize: Int) -> Int { 6 + 2 * queueSize }
    public static func usedEventOffset(queueSize: Int) -> Int { 4 + 2 * queueSize }

    /// `struct virtq_used` (device area): flags, idx, ring[size] of {id le32, len le32},
    /// avail_event; 4-aligned.
    public static let usedAlignment = 4
    public static let usedFlags = 0
    public static let usedIndex = 2
    public static let usedRing = 4
    public static let usedElementSize = 8
    public static let usedElementID = 0
    public static let usedElementLength = 4
    public static func usedSize(queueSize: Int) -> Int { 6 + 8 * queueSize }
    public static func availEventOffset(queueSize: Int) -> Int { 4 + 8 * queueSize }
}

/// Descriptor flags. Spec: VIRTQ_DESC_F_*.
public struct DescriptorFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The buffer continues via `next`.
    public static let next = Self(rawValue: 1)
    /// Device-writable buffer (otherwise device-readable).
    public static let write = Self(rawValue: 2)
    /// The buffer holds a table of indirect descriptors.
    public static let indirect = Self(rawValue: 4)
}

/// Ring flags. Spec: VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY.
public enum RingFlags {
    public static let availNoInterrupt: UInt16 = 1
    public static let usedNoNotify: UInt16 = 1
}

/// The EVENT_IDX rule: notify when the index passed `event` in the last batch
/// `(old, new]`. Spec: §2.7.10, `vring_need_event`.
@inlinable
package func ringNeedsEvent(eventIndex: UInt16, newIndex: UInt16, oldIndex: UInt16) -> Bool {
    (newIndex &- eventIndex &- 1) < (newIndex &- oldIndex)
}
