import Foundation
import VirtioTestSupport

/// The built `virtio-admin` binary beside the test bundle.
let virtioAdminPath: String = {
    let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let binary = products.appendingPathComponent("virtio-admin").path
    // xctest bundles live one level deeper on some layouts.
    return FileManager.default.isExecutableFile(atPath: binary) ? binary : products.deletingLastPathComponent().appendingPathComponent("virtio-admin").path
}()

/// Runs the built `virtio-admin` binary (with `environment`, or the test's own).
func virtioAdmin(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String, error: String) {
    try runProgram(virtioAdminPath, arguments, environment: environment)
}

func json(_ text: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
}
