import VirtioProvisioning

// Policy files are operator input read by a root helper: any text must parse or give a
// PolicyError with a position, never crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let policy = try ProvisioningPolicy(text: text, file: "fuzz.toml")
        for rule in policy.pfs { for vf in 0..<4 { _ = policy.desired(for: vf, under: rule)?.features(for: .net) } }
    } catch {
        precondition(error.position.line >= 1 && error.position.column >= 1)
    }
    return 0
}
