#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A failed system call: its name, the path it worked on and errno.
public struct SystemCallError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The system call or libc function (`open`, `pread`).
    public var call: String
    /// The path (or device) it worked on.
    public var path: String
    /// The errno it failed with.
    public var errno: Int32

    package init(call: String, path: String, errno: Int32) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    /// Whether errno is ENOENT.
    public var isNotFound: Bool { errno == ENOENT }
    /// Whether errno is EACCES or EPERM.
    public var isPermissionDenied: Bool { errno == EACCES || errno == EPERM }

    /// `call(path) failed: strerror(errno)`.
    public var description: String {
        "\(call)(\(path)) failed: \(String(cString: strerror(errno)))"
    }
}

/// Every system call VirtioLinux makes goes through these wrappers (EINTR is retried).
enum Sys {
    static func readFile(_ path: String, limit: Int = 1 << 20) throws(SystemCallError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while result.count < limit {
            let got = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, limit - result.count)) }
            if got < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(call: "read", path: path, errno: errno)
            }
            if got == 0 { break }
            result.append(contentsOf: chunk[0..<got])
        }
        return result
    }

    static func readText(_ path: String) throws(SystemCallError) -> String {
        let bytes = try readFile(path, limit: 64 * 1024)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The target of a symbolic link, or `nil` when `path` is not a link.
    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink(path, &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Names in a directory (without `.` and `..`), sorted.
    static func listDirectory(_ path: String) throws(SystemCallError) -> [String] {
        guard let dir = opendir(path) else { throw SystemCallError(call: "opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static var isRoot: Bool { geteuid() == 0 }

    /// The canonical path (symlinks resolved), or nil when it does not exist.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// The last path component.
func baseName(_ path: String) -> String {
    String(path.split(separator: "/").last ?? Substring(path))
}

extension Sys {
    /// Writes `text` to an existing sysfs/proc file (one write, as the kernel expects).
    static func writeText(_ text: String, to path: String) throws(SystemCallError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        while true {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written >= 0 { return }
            if errno == EINTR { continue }
            throw SystemCallError(call: "write", path: path, errno: errno)
        }
    }

    static func openFile(_ path: String, flags: Int32) throws(SystemCallError) -> Int32 {
        while true {
            let fd = open(path, flags | O_CLOEXEC)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw SystemCallError(call: "open", path: path, errno: errno)
        }
    }

    static func preadExactly(_ fd: Int32, count: Int, offset: Int64, path: String) throws(SystemCallError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
            if got < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(call: "pread", path: path, errno: errno)
            }
            if got == 0 { throw SystemCallError(call: "pread", path: path, errno: EIO) }
            done += got
        }
        return buffer
    }

    static func sleepMilliseconds(_ milliseconds: Int) {
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

extension Sys {
    /// A directory descriptor for relative lookups, or -1.
    static func openDirectory(_ path: String) -> Int32 {
        open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    }

    static func closeFD(_ fd: Int32) { close(fd) }

    /// A small file (sysfs attribute) under a directory descriptor, read into a stack buffer.
    static func readSmallText(at directory: Int32, _ name: String) -> String? {
        let fd = openat(directory, name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { buffer -> String? in
            var total = 0
            while total < buffer.count {
                let got = read(fd, buffer.baseAddress! + total, buffer.count - total)
                if got < 0 { if errno == EINTR { continue }; return nil }
                if got == 0 { break }
                total += got
            }
            return String(decoding: UnsafeBufferPointer(rebasing: buffer[0..<total]), as: UTF8.self)
        }
    }

    /// The target of a link under a directory descriptor.
    static func readLink(at directory: Int32, _ name: String) -> String? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(PATH_MAX) + 1) { buffer -> String? in
            let length = readlinkat(directory, name, buffer.baseAddress!, buffer.count - 1)
            guard length > 0 else { return nil }
            return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress!, count: length), as: UTF8.self)
        }
    }
}
