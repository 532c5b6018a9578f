import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An exclusive `flock` on a lock file (made mode 0600 when missing), held until
/// ``unlock()`` or until the object goes away. Locks of two `FileLock`s on one path exclude
/// each other, in one process as across processes.
package final class FileLock: @unchecked Sendable {
    package let path: String
    // Used from one task at a time (its owner).
    private var fd: Int32 = -1

    package init(path: String) { self.path = path }
    deinit { unlock() }

    package var isLocked: Bool { fd >= 0 }

    /// Takes the lock if it is free: true when taken (or already held), false when another
    /// holder has it.
    package func tryLock() throws(SystemCallError) -> Bool {
        try take(blocking: false)
    }

    /// Takes the lock, waiting as long as it takes (blocks the thread).
    package func lock() throws(SystemCallError) {
        _ = try take(blocking: true)
    }

    private func take(blocking: Bool) throws(SystemCallError) -> Bool {
        guard fd < 0 else { return true }
        let descriptor = try Sys.open(path, .readWrite, options: .create, permissions: [.ownerReadWrite]).rawValue
        switch retryingInterrupts({ flock(descriptor, LOCK_EX | (blocking ? 0 : LOCK_NB)) }) {
        case .success:
            fd = descriptor
            return true
        case .failure(let code):
            close(descriptor)
            if code == .wouldBlock { return false }
            throw SystemCallError(call: "flock", path: path, errno: code)
        }
    }

    /// Lets the lock go (and closes the file).
    package func unlock() {
        guard fd >= 0 else { return }
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }
}
