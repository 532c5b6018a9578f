#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a file of the simulator (fake sysfs tree, state file) could not be written or read.
public struct SimulatorFileError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The system call or libc function that failed.
    public var call: String
    /// The file it worked on.
    public var path: String
    /// The errno it failed with.
    public var errno: Int32
    /// `call(path) failed: strerror(errno).`
    public var description: String { "\(call)(\(path)) failed: \(String(cString: strerror(errno)))." }
}

/// File helpers of the simulator (POSIX only; the device model stays Foundation-free).
enum SimFiles {
    static func makeDirectories(_ path: String) throws(SimulatorFileError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw SimulatorFileError(call: "mkdir", path: current, errno: errno)
            }
        }
    }

    static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws(SimulatorFileError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SimulatorFileError(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
            if result < 0 {
                if errno == EINTR { continue }
                throw SimulatorFileError(call: "write", path: path, errno: errno)
            }
            written += result
        }
    }

    static func write(_ text: String, to path: String) throws(SimulatorFileError) {
        try write(Array(text.utf8), to: path)
    }

    static func read(_ path: String) throws(SimulatorFileError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SimulatorFileError(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if got < 0 {
                if errno == EINTR { continue }
                throw SimulatorFileError(call: "read", path: path, errno: errno)
            }
            if got == 0 { return out }
            out.append(contentsOf: chunk[0..<got])
        }
    }

    /// Replaces `path` atomically: writes a temporary file beside it, then renames it. A
    /// process killed at any point leaves the old file or the new one, whole. (No fsync: a
    /// simulated device's state need not survive a power loss, and the service saves it
    /// after every batch.)
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(SimulatorFileError) {
        let temporary = path + ".tmp.\(getpid())"
        try write(bytes, to: temporary)
        guard rename(temporary, path) == 0 else {
            let saved = errno
            unlink(temporary)
            throw SimulatorFileError(call: "rename", path: path, errno: saved)
        }
    }

    static func symlink(target: String, at path: String) throws(SimulatorFileError) {
        unlink(path)
        guard Glibc.symlink(target, path) == 0 else { throw SimulatorFileError(call: "symlink", path: path, errno: errno) }
    }
}
