/// Split-virtqueue layout. Spec: §2.7 "Split Virtqueues"; digest §6.
package enum SplitQueueLayout {
    /// Largest split queue size (a power of two).
    package static let maximumSize = 32768

    /// `struct virtq_desc`: 16 bytes, table 16-byte aligned.
    package static let descriptorSize = 16
    package static let descriptorAlignment = 16
    package static let descriptorAddress = 0
    package static let descriptorLength = 8
    package static let descriptorFlags = 12
    package static let descriptorNext = 14

    /// `struct virtq_avail` (driver area): flags, idx, ring[size], used_event; 2-aligned.
    package static let availAlignment = 2
    package static let availFlags = 0
    package static let availIndex = 2
    package static let availRing = 4
    package static func availSize(queueSize: Int) -> Int { 6 + 2 * queueSize }
    package static func usedEventOffset(queueSize: Int) -> Int { 4 + 2 * queueSize }

    /// `struct virtq_used` (device area): flags, idx, ring[size] of {id le32, len le32},
    /// avail_event; 4-aligned.
    package static let usedAlignment = 4
    package static let usedFlags = 0
    package static let usedIndex = 2
    package static let usedRing = 4
    package static let usedElementSize = 8
    package static let usedElementID = 0
    package static let usedElementLength = 4
    package static func usedSize(queueSize: Int) -> Int { 6 + 8 * queueSize }
    package static func availEventOffset(queueSize: Int) -> Int { 4 + 8 * queueSize }
}

/// Descriptor flags. Spec: VIRTQ_DESC_F_*.
package struct DescriptorFlags: OptionSet, Hashable, Sendable {
    package let rawValue: UInt16
    package init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The buffer continues via `next`.
    package static let next = Self(rawValue: 1)
    /// Device-writable buffer (otherwise device-readable).
    package static let write = Self(rawValue: 2)
    /// The buffer holds a table of indirect descriptors.
    package static let indirect = Self(rawValue: 4)
}

/// Ring flags. Spec: VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY.
package enum RingFlags {
    package static let availNoInterrupt: UInt16 = 1
    package static let usedNoNotify: UInt16 = 1
}

/// The EVENT_IDX rule: notify when the index passed `event` in the last batch
/// `(old, new]`. Spec: §2.7.10, `vring_need_event`.
@inlinable
package func ringNeedsEvent(eventIndex: UInt16, newIndex: UInt16, oldIndex: UInt16) -> Bool {
    (newIndex &- eventIndex &- 1) < (newIndex &- oldIndex)
}
