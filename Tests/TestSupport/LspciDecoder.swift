import Foundation

/// What `lspci -vvv` says about one function: the independent decoder the project's own
/// decoder is checked against. Only the fields the tests compare are parsed.
package struct LspciFunction: Equatable, Sendable {
    package struct VirtioCap: Equatable, Sendable {
        package var capabilityOffset: Int
        package var kind: String
        package var bar: Int
        package var offset: UInt64
        package var size: UInt64
        package var multiplier: UInt32?
    }
    package struct MSIX: Equatable, Sendable {
        package var capabilityOffset: Int
        package var count: Int
        package var enabled: Bool
        package var tableBAR: Int
        package var tableOffset: UInt64
        package var pbaBAR: Int
        package var pbaOffset: UInt64
    }
    package struct SRIOV: Equatable, Sendable {
        package var initialVFs: Int
        package var totalVFs: Int
        package var numVFs: Int
        package var vfOffset: Int
        package var vfStride: Int
        package var vfDeviceID: UInt16
        package init(initialVFs: Int, totalVFs: Int, numVFs: Int, vfOffset: Int, vfStride: Int, vfDeviceID: UInt16) {
            (self.initialVFs, self.totalVFs, self.numVFs, self.vfOffset, self.vfStride, self.vfDeviceID) = (initialVFs, totalVFs, numVFs, vfOffset, vfStride, vfDeviceID)
        }
    }
    package struct Region: Equatable, Sendable {
        package var index: Int
        package var address: UInt64
        package var is64Bit: Bool
        package var prefetchable: Bool
        package var size: String?
    }

    package var slot: String
    package var virtioCaps: [VirtioCap] = []
    package var msix: MSIX?
    package var sriov: SRIOV?
    package var regions: [Region] = []
    package var capabilityOffsets: [Int] = []
}

/// Whether lspci is installed.
package var lspciPath: String? {
    ["/usr/bin/lspci", "/usr/sbin/lspci", "/bin/lspci", "/sbin/lspci"].first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Runs a program and returns its standard output (standard error is discarded).
package func runProgram(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Runs `lspci -vvv -D` with extra arguments and parses every function it prints.
package func lspciFunctions(_ extraArguments: [String] = []) throws -> [String: LspciFunction] {
    guard let lspci = lspciPath else { return [:] }
    let result = try runProgram(lspci, extraArguments + ["-vvv", "-D"])
    return parseLspci(result.output)
}

/// Parses `lspci -vvv -D` output.
package func parseLspci(_ text: String) -> [String: LspciFunction] {
    var functions: [String: LspciFunction] = [:]
    var current: LspciFunction?
    var pending: (kind: String, offset: Int)?
    var msixPending: LspciFunction.MSIX?
    func flush() {
        if var function = current {
            if let msix = msixPending { function.msix = msix }
            functions[function.slot] = function
        }
        msixPending = nil
        pending = nil
    }
    func hexValue(_ text: Substring) -> UInt64 { UInt64(text, radix: 16) ?? 0 }
    func field(_ line: String, _ key: String) -> Substring? {
        guard let range = line.range(of: key + "=") else { return nil }
        return line[range.upperBound...].prefix { $0.isHexDigit }
    }
    func number(after key: String, in line: String) -> Int? {
        guard let range = line.range(of: key) else { return nil }
        return Int(line[range.upperBound...].prefix { $0.isNumber })
    }

    for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
        let line = String(raw)
        if !line.hasPrefix("\t"), let first = line.split(separator: " ").first, first.contains(":"), first.contains(".") {
            flush()
            current = LspciFunction(slot: String(first))
            continue
        }
        guard current != nil else { continue }
        let trimmedLine = line.trimmingCharacters(in: .whitespaces)
        if trimmedLine.hasPrefix("Capabilities: [") {
            pending = nil
            let offsetText = trimmedLine.dropFirst("Capabilities: [".count).prefix { $0.isHexDigit }
            let offset = Int(offsetText, radix: 16) ?? -1
            if !trimmedLine.contains(" v1]") && !trimmedLine.contains(" v2]") { current!.capabilityOffsets.append(offset) }
            if let range = trimmedLine.range(of: "VirtIO: ") {
                pending = (String(trimmedLine[range.upperBound...]), offset)
            } else if trimmedLine.contains("MSI-X: ") {
                msixPending = LspciFunction.MSIX(capabilityOffset: offset, count: number(after: "Count=", in: trimmedLine) ?? -1,
                                                 enabled: trimmedLine.contains("Enable+"), tableBAR: -1, tableOffset: 0, pbaBAR: -1, pbaOffset: 0)
            }
        } else if let kind = pending, trimmedLine.hasPrefix("BAR=") {
            current!.virtioCaps.append(.init(
                capabilityOffset: kind.offset, kind: kind.kind, bar: Int(field(trimmedLine, "BAR").map { hexValue($0) } ?? 99),
                offset: field(trimmedLine, "offset").map(hexValue) ?? 0, size: field(trimmedLine, "size").map(hexValue) ?? 0,
                multiplier: field(trimmedLine, "multiplier").map { UInt32(hexValue($0)) }))
            pending = nil
        } else if trimmedLine.hasPrefix("Vector table: "), msixPending != nil {
            msixPending!.tableBAR = Int(field(trimmedLine, "BAR").map(hexValue) ?? 99)
            msixPending!.tableOffset = field(trimmedLine, "offset").map(hexValue) ?? 0
        } else if trimmedLine.hasPrefix("PBA: "), msixPending != nil {
            msixPending!.pbaBAR = Int(field(trimmedLine, "BAR").map(hexValue) ?? 99)
            msixPending!.pbaOffset = field(trimmedLine, "offset").map(hexValue) ?? 0
        } else if trimmedLine.hasPrefix("Initial VFs: ") {
            current!.sriov = .init(initialVFs: number(after: "Initial VFs: ", in: trimmedLine) ?? -1,
                                   totalVFs: number(after: "Total VFs: ", in: trimmedLine) ?? -1,
                                   numVFs: number(after: "Number of VFs: ", in: trimmedLine) ?? -1, vfOffset: -1, vfStride: -1, vfDeviceID: 0)
        } else if trimmedLine.hasPrefix("VF offset: "), current!.sriov != nil {
            current!.sriov!.vfOffset = number(after: "VF offset: ", in: trimmedLine) ?? -1
            current!.sriov!.vfStride = number(after: "stride: ", in: trimmedLine) ?? -1
            if let range = trimmedLine.range(of: "Device ID: ") {
                current!.sriov!.vfDeviceID = UInt16(trimmedLine[range.upperBound...].prefix { $0.isHexDigit }, radix: 16) ?? 0
            }
        } else if trimmedLine.hasPrefix("Region "), trimmedLine.contains("Memory at "), !trimmedLine.contains("<unassigned>"), !line.hasPrefix("\t\t") {
            let index = number(after: "Region ", in: trimmedLine) ?? -1
            let addressText = trimmedLine[trimmedLine.range(of: "Memory at ")!.upperBound...].prefix { $0.isHexDigit }
            var size: String?
            if let range = trimmedLine.range(of: "[size=") { size = String(trimmedLine[range.upperBound...].prefix { $0 != "]" }) }
            current!.regions.append(.init(index: index, address: hexValue(addressText), is64Bit: trimmedLine.contains("64-bit"),
                                          prefetchable: !trimmedLine.contains("non-prefetchable"), size: size))
        }
    }
    flush()
    return functions
}

/// lspci's name for a virtio cfg type.
package func lspciVirtioName(_ cfgType: String) -> String {
    switch cfgType {
    case "common": "CommonCfg"
    case "notify": "Notify"
    case "isr": "ISR"
    case "device": "DeviceCfg"
    case "sharedMemory": "SHM"
    default: "<unknown>"
    }
}

/// This test process's scratch directory: every ``makeTemporaryDirectory(_:)`` is made in
/// it, and it is removed with everything in it when the process exits (a run that crashes
/// leaves it behind). Short, so that socket paths under it stay within `sun_path`.
private let scratchRoot: String = {
    var template = Array((NSTemporaryDirectory() + "va-tests-XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp in \(NSTemporaryDirectory()) failed: errno \(errno)") }
    atexit { removeScratchRoot() }
    return String(cString: made)
}()

private func removeScratchRoot() {
    try? FileManager.default.removeItem(atPath: scratchRoot)
}

/// A fresh temporary directory (`label-XXXXXX` in the process's scratch directory, removed
/// when the test process exits).
package func makeTemporaryDirectory(_ label: String = "virtio-admin-test") -> String {
    var template = Array((scratchRoot + "/\(label)-XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp in \(scratchRoot) failed: errno \(errno)") }
    return String(cString: made)
}

/// Hex dump in `lspci -xxxx` format, which `lspci -F FILE` decodes.
package func lspciHexDump(slot: String, title: String = "Device", config: [UInt8]) -> String {
    var text = "\(slot) \(title)\n"
    for row in stride(from: 0, to: config.count, by: 16) {
        let bytes = config[row..<min(row + 16, config.count)].map { String(format: "%02x", $0) }.joined(separator: " ")
        text += String(format: "%03x: ", row) + bytes + "\n"
    }
    return text + "\n"
}
