import FuzzSupport

// The body is fuzzUsedRing in Fuzz/Sources/FuzzSupport (it reaches `package` declarations).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { fuzzUsedRing(data, size) }
