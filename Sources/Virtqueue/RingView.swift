import CVolatile
import VirtioSpec

/// Typed access to the three parts of a split virtqueue in shared memory.
///
/// Both sides use it: the driver's ``SplitVirtqueue`` and the device model. Indices and
/// flags go through atomic helpers (acquire/release where the spec asks for a barrier),
/// so the ordering rules of spec §2.7.13 are explicit. The view does no validation:
/// callers treat everything the other side wrote as untrusted.
package struct SplitRingView: @unchecked Sendable {
    // SAFETY: the three pointers cover the areas `SplitQueueLayout` gives for `size`
    // entries; whoever builds the view keeps that memory alive while it is used.
    package let size: Int
    package let descriptors: UnsafeMutableRawPointer
    package let avail: UnsafeMutableRawPointer
    package let used: UnsafeMutableRawPointer

    package init(size: Int, descriptors: UnsafeMutableRawPointer, avail: UnsafeMutableRawPointer, used: UnsafeMutableRawPointer) {
        self.size = size
        self.descriptors = descriptors
        self.avail = avail
        self.used = used
    }

    // MARK: Descriptors
    @inline(__always) func descriptor(_ index: Int) -> UnsafeMutableRawPointer {
        descriptors + index * SplitQueueLayout.descriptorSize
    }
    @inline(__always) package func writeDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: DescriptorFlags, next: UInt16) {
        let base = descriptor(index)
        base.storeBytes(of: address.littleEndian, toByteOffset: SplitQueueLayout.descriptorAddress, as: UInt64.self)
        base.storeBytes(of: length.littleEndian, toByteOffset: SplitQueueLayout.descriptorLength, as: UInt32.self)
        base.storeBytes(of: flags.rawValue.littleEndian, toByteOffset: SplitQueueLayout.descriptorFlags, as: UInt16.self)
        base.storeBytes(of: next.littleEndian, toByteOffset: SplitQueueLayout.descriptorNext, as: UInt16.self)
    }
    @inline(__always) package func readDescriptor(_ index: Int) -> (address: UInt64, length: UInt32, flags: DescriptorFlags, next: UInt16) {
        let base = UnsafeRawPointer(descriptor(index))
        return (UInt64(littleEndian: base.load(fromByteOffset: SplitQueueLayout.descriptorAddress, as: UInt64.self)),
                UInt32(littleEndian: base.load(fromByteOffset: SplitQueueLayout.descriptorLength, as: UInt32.self)),
                DescriptorFlags(rawValue: UInt16(littleEndian: base.load(fromByteOffset: SplitQueueLayout.descriptorFlags, as: UInt16.self))),
                UInt16(littleEndian: base.load(fromByteOffset: SplitQueueLayout.descriptorNext, as: UInt16.self)))
    }

    // MARK: Driver (avail) ring
    @inline(__always) package var availFlags: UInt16 {
        get { UInt16(littleEndian: cv_load_relaxed16(avail + SplitQueueLayout.availFlags)) }
        nonmutating set { cv_store_relaxed16(avail + SplitQueueLayout.availFlags, newValue.littleEndian) }
    }
    /// avail->idx, read with acquire (device side) — entries written before it are visible.
    @inline(__always) package func loadAvailIndex() -> UInt16 { UInt16(littleEndian: cv_load_acquire16(avail + SplitQueueLayout.availIndex)) }
    /// avail->idx, published with release (driver side) after the entries and descriptors.
    @inline(__always) package func storeAvailIndex(_ value: UInt16) { cv_store_release16(avail + SplitQueueLayout.availIndex, value.littleEndian) }
    @inline(__always) package func availEntry(_ slot: Int) -> UInt16 {
        UInt16(littleEndian: cv_load_relaxed16(avail + SplitQueueLayout.availRing + 2 * slot))
    }
    @inline(__always) package func setAvailEntry(_ slot: Int, _ head: UInt16) {
        cv_store_relaxed16(avail + SplitQueueLayout.availRing + 2 * slot, head.littleEndian)
    }
    /// used_event (EVENT_IDX): written by the driver, read by the device.
    @inline(__always) package var usedEvent: UInt16 {
        get { UInt16(littleEndian: cv_load_relaxed16(avail + SplitQueueLayout.usedEventOffset(queueSize: size))) }
        nonmutating set { cv_store_relaxed16(avail + SplitQueueLayout.usedEventOffset(queueSize: size), newValue.littleEndian) }
    }

    // MARK: Device (used) ring
    @inline(__always) package var usedFlags: UInt16 {
        get { UInt16(littleEndian: cv_load_relaxed16(used + SplitQueueLayout.usedFlags)) }
        nonmutating set { cv_store_relaxed16(used + SplitQueueLayout.usedFlags, newValue.littleEndian) }
    }
    /// used->idx, read with acquire (driver side) — the entries before it are visible.
    @inline(__always) package func loadUsedIndex() -> UInt16 { UInt16(littleEndian: cv_load_acquire16(used + SplitQueueLayout.usedIndex)) }
    /// used->idx, published with release (device side).
    @inline(__always) package func storeUsedIndex(_ value: UInt16) { cv_store_release16(used + SplitQueueLayout.usedIndex, value.littleEndian) }
    @inline(__always) package func usedEntry(_ slot: Int) -> (id: UInt32, length: UInt32) {
        let base = used + SplitQueueLayout.usedRing + SplitQueueLayout.usedElementSize * slot
        return (UInt32(littleEndian: cv_load_relaxed32(base + SplitQueueLayout.usedElementID)),
                UInt32(littleEndian: cv_load_relaxed32(base + SplitQueueLayout.usedElementLength)))
    }
    @inline(__always) package func setUsedEntry(_ slot: Int, id: UInt32, length: UInt32) {
        let base = used + SplitQueueLayout.usedRing + SplitQueueLayout.usedElementSize * slot
        cv_store_relaxed32(base + SplitQueueLayout.usedElementID, id.littleEndian)
        cv_store_relaxed32(base + SplitQueueLayout.usedElementLength, length.littleEndian)
    }
    /// avail_event (EVENT_IDX): written by the device, read by the driver.
    @inline(__always) package var availEvent: UInt16 {
        get { UInt16(littleEndian: cv_load_relaxed16(used + SplitQueueLayout.availEventOffset(queueSize: size))) }
        nonmutating set { cv_store_relaxed16(used + SplitQueueLayout.availEventOffset(queueSize: size), newValue.littleEndian) }
    }
}

/// Where the three parts of a split queue of `size` entries sit in one DMA allocation.
package struct SplitRingLayout: Sendable, Hashable {
    package let size: Int
    package let descriptorOffset: Int
    package let availOffset: Int
    package let usedOffset: Int
    package let totalLength: Int

    package init(size: Int) {
        self.size = size
        descriptorOffset = 0
        availOffset = size * SplitQueueLayout.descriptorSize
        let availEnd = availOffset + SplitQueueLayout.availSize(queueSize: size)
        // The used ring is 4-aligned by the spec; put it on its own cache line.
        usedOffset = (availEnd + 63) & ~63
        totalLength = usedOffset + SplitQueueLayout.usedSize(queueSize: size)
    }
}
