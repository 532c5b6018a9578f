import Foundation
import VirtioTestSupport

/// Runs the built `virtio-admin` binary.
func virtioAdmin(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
    let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var binary = products.appendingPathComponent("virtio-admin").path
    if !FileManager.default.isExecutableFile(atPath: binary) {
        // xctest bundles live one level deeper on some layouts.
        binary = products.deletingLastPathComponent().appendingPathComponent("virtio-admin").path
    }
    return try runProgram(binary, arguments)
}

func json(_ text: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
}
