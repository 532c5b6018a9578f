import VirtioProvisioning

// Policy files are operator input read by a root helper: any text must parse or give a
// PolicyError whose position is inside the text (a line that exists, a column at most one
// past its end), never crash. The policy is read once, by PolicyReader (no TOML library).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let policy = try ProvisioningPolicy(text: text, file: "fuzz.toml")
        for rule in policy.pfs {
            precondition(rule.position.line >= 1 && rule.position.column >= 1)
            for vf in 0..<4 { _ = policy.desired(for: vf, under: rule)?.features(for: .net) }
        }
    } catch {
        let lines = text.utf8.split(separator: 0x0a, omittingEmptySubsequences: false)
        precondition(error.position.line >= 1 && error.position.line <= lines.count, "\(error)")
        precondition(error.position.column >= 1 && error.position.column <= lines[error.position.line - 1].count + 1, "\(error)")
    }
    return 0
}
