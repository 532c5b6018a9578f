import FuzzSupport

// The body is fuzzConfigSpace in Fuzz/Sources/FuzzSupport (it reaches `package` declarations).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { fuzzConfigSpace(data, size) }
