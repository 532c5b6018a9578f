import CVolatile

/// Access to one device register region (a BAR or part of one) at natural widths.
///
/// Offsets are relative to the region. Implementations check every access against
/// ``length``: an access outside the region is a bug in the caller (offsets come from
/// capabilities that the transport validated against the BAR size before use), so it
/// traps rather than touching memory outside the mapping.
package protocol RegisterSpace: AnyObject, Sendable {
    /// Length of the region in bytes.
    var length: Int { get }
    func read8(at offset: Int) -> UInt8
    func read16(at offset: Int) -> UInt16
    func read32(at offset: Int) -> UInt32
    func write8(_ value: UInt8, at offset: Int)
    func write16(_ value: UInt16, at offset: Int)
    func write32(_ value: UInt32, at offset: Int)
}

extension RegisterSpace {
    /// 64-bit read as two 32-bit halves (low first), as the spec allows for 64-bit fields.
    package func read64(at offset: Int) -> UInt64 {
        UInt64(read32(at: offset)) | UInt64(read32(at: offset + 4)) << 32
    }
    /// 64-bit write as two 32-bit halves (low first).
    package func write64(_ value: UInt64, at offset: Int) {
        write32(UInt32(truncatingIfNeeded: value), at: offset)
        write32(UInt32(truncatingIfNeeded: value >> 32), at: offset + 4)
    }
}

@inline(__always)
func checkAccess(_ offset: Int, _ width: Int, _ length: Int) {
    precondition(offset >= 0 && offset <= length - width && offset % width == 0,
                 "register access at \(offset) (width \(width)) outside region of \(length) bytes or misaligned")
}

/// A memory-mapped region (sysfs `resourceN` mmap or a VFIO region mmap): volatile access
/// through the CVolatile helpers.
package final class MMIORegion: RegisterSpace, @unchecked Sendable {
    // SAFETY: `base` points to a mapping of at least `length` bytes that outlives this object
    // (the owner unmaps only after releasing it); every access is bounds-checked.
    package let base: UnsafeMutableRawPointer
    package let length: Int

    package init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }

    package func read8(at offset: Int) -> UInt8 { checkAccess(offset, 1, length); return cv_mmio_read8(base + offset) }
    package func read16(at offset: Int) -> UInt16 { checkAccess(offset, 2, length); return UInt16(littleEndian: cv_mmio_read16(base + offset)) }
    package func read32(at offset: Int) -> UInt32 { checkAccess(offset, 4, length); return UInt32(littleEndian: cv_mmio_read32(base + offset)) }
    package func write8(_ value: UInt8, at offset: Int) { checkAccess(offset, 1, length); cv_mmio_write8(base + offset, value) }
    package func write16(_ value: UInt16, at offset: Int) { checkAccess(offset, 2, length); cv_mmio_write16(base + offset, value.littleEndian) }
    package func write32(_ value: UInt32, at offset: Int) { checkAccess(offset, 4, length); cv_mmio_write32(base + offset, value.littleEndian) }
}

/// A window of a larger register space (a capability's structure inside a BAR).
package struct RegisterWindow: Sendable {
    package let space: any RegisterSpace
    package let base: Int
    package let length: Int

    /// Creates a window; the caller has checked `base + length <= space.length`.
    init(space: any RegisterSpace, base: Int, length: Int) {
        precondition(base >= 0 && length >= 0 && base + length <= space.length)
        self.space = space
        self.base = base
        self.length = length
    }

    @inline(__always) package func read8(_ offset: Int) -> UInt8 { checkAccess(offset, 1, length); return space.read8(at: base + offset) }
    @inline(__always) package func read16(_ offset: Int) -> UInt16 { checkAccess(offset, 2, length); return space.read16(at: base + offset) }
    @inline(__always) package func read32(_ offset: Int) -> UInt32 { checkAccess(offset, 4, length); return space.read32(at: base + offset) }
    @inline(__always) package func write8(_ value: UInt8, _ offset: Int) { checkAccess(offset, 1, length); space.write8(value, at: base + offset) }
    @inline(__always) package func write16(_ value: UInt16, _ offset: Int) { checkAccess(offset, 2, length); space.write16(value, at: base + offset) }
    @inline(__always) package func write32(_ value: UInt32, _ offset: Int) { checkAccess(offset, 4, length); space.write32(value, at: base + offset) }
}
