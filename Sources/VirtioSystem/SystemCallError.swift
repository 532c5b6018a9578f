import SystemPackage

/// A failed system call: its name, what it worked on (a path, or a device and register) and
/// errno, as one sentence — "open(/sys/bus/pci/devices/0000:3b:00.0/config) failed:
/// Permission denied".
///
/// The one error type of every system call in the project (the Linux device layer, the
/// service, the plugin loader and the device model's files).
public struct SystemCallError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The call, as the user would look it up: `open`, `pread`, `ioctl(VFIO_SET_IOMMU)`.
    public var call: String
    /// What the call worked on (empty when nothing has a name).
    public var path: String
    /// Why it failed.
    public var errno: Errno

    package init(call: String, path: String, errno: Errno) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    /// From a raw errno value (`Glibc.errno`).
    package init(call: String, path: String, errno: Int32) {
        self.init(call: call, path: path, errno: Errno(rawValue: errno))
    }

    /// The path (or one of its directories) does not exist.
    public var isNotFound: Bool { errno == .noSuchFileOrDirectory }
    /// The caller lacks the right (not root, or a file mode).
    public var isPermissionDenied: Bool { errno == .permissionDenied || errno == .notPermitted }

    /// One sentence without its final period (the caller puts the error in context and ends it).
    public var description: String {
        (path.isEmpty ? call : "\(call)(\(path))") + " failed: \(errno)"
    }
}

/// The failure of `body` as a ``SystemCallError`` naming `call` and `path` (swift-system's
/// calls throw a bare `Errno`).
@inline(__always)
func naming<T>(_ call: String, _ path: String, _ body: () throws -> T) throws(SystemCallError) -> T {
    do { return try body() } catch {
        throw SystemCallError(call: call, path: path, errno: (error as? Errno) ?? .ioError)
    }
}
