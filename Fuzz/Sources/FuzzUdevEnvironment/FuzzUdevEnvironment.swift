import VirtioProvisioning

// The udev environment reaches a root helper: every value must be validated.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    var environment: [String: String] = [:]
    for line in text.split(separator: "\n") {
        let pair = line.split(separator: "=", maxSplits: 1)
        if pair.count == 2 { environment[String(pair[0])] = String(pair[1]) }
    }
    if let event = try? UdevEvent(environment: environment) {
        // Accepted paths stay under /devices: no empty, "." or ".." component.
        precondition(event.devpath.hasPrefix("/devices/"))
        precondition(!event.devpath.split(separator: "/", omittingEmptySubsequences: false).dropFirst().contains { $0.isEmpty || $0 == "." || $0 == ".." })
        _ = try? UdevEvent(environment: UdevEvent.environment(fromWire: event.wireLine))
    }
    _ = UdevEvent.environment(fromWire: text)
    return 0
}
