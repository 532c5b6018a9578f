/// Little-endian integer access to byte buffers.
///
/// Every multi-byte field in virtio and PCI is little-endian. These helpers are the only
/// place the project assembles or splits such fields; callers check bounds first (the
/// decoders turn an out-of-range access into a typed error before calling these).

extension Array where Element == UInt8 {
    /// Reads a little-endian integer at `offset`. Precondition: the range is in bounds.
    @inlinable
    package func readLE<T: FixedWidthInteger & UnsignedInteger>(_: T.Type = T.self, at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "readLE out of bounds")
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(self[offset + index]) << (8 * index)
        }
        return value
    }

    /// Reads a little-endian integer at `offset`, or `nil` when the range is out of bounds.
    @inlinable
    package func readLEIfPresent<T: FixedWidthInteger & UnsignedInteger>(_: T.Type = T.self, at offset: Int) -> T? {
        guard offset >= 0, offset <= count - MemoryLayout<T>.size else { return nil }
        return readLE(T.self, at: offset)
    }

    /// Writes `value` little-endian at `offset`. Precondition: the range is in bounds.
    @inlinable
    package mutating func writeLE<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "writeLE out of bounds")
        for index in 0..<MemoryLayout<T>.size {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    /// Appends `value` little-endian.
    @inlinable
    package mutating func appendLE<T: FixedWidthInteger & UnsignedInteger>(_ value: T) {
        for index in 0..<MemoryLayout<T>.size {
            append(UInt8(truncatingIfNeeded: value >> (8 * index)))
        }
    }
}

extension UnsafeRawBufferPointer {
    /// Reads a little-endian integer at `offset` (unaligned access allowed).
    @inlinable
    package func readLE<T: FixedWidthInteger & UnsignedInteger>(_: T.Type = T.self, at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "readLE out of bounds")
        return T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Writes `value` little-endian at `offset` (unaligned access allowed).
    @inlinable
    package func writeLE<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "writeLE out of bounds")
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}

/// Formats an unsigned integer as lower-case hex with a `0x` prefix, zero-padded to `width` digits.
@inlinable
package func hex<T: BinaryInteger>(_ value: T, width: Int = 0) -> String {
    let digits = String(value, radix: 16)
    let padding = width > digits.count ? String(repeating: "0", count: width - digits.count) : ""
    return "0x" + padding + digits
}

/// Formats bytes as lower-case hex pairs separated by single spaces (as `--trace` prints them).
package func hexBytes<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    var out = ""
    out.reserveCapacity(bytes.count * 3)
    for (index, byte) in bytes.enumerated() {
        if index > 0 { out += " " }
        let text = String(byte, radix: 16)
        if text.count == 1 { out += "0" }
        out += text
    }
    return out
}
