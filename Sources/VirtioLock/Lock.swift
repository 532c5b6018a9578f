#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A mutual-exclusion lock over `pthread_mutex_t`.
///
/// The project uses it instead of `Synchronization.Mutex` because ThreadSanitizer
/// intercepts pthread locks and so sees the ordering they create; the stdlib's futex-based
/// `Mutex` is invisible to it, which turns every guarded access into a false race report
/// and makes `swift test --sanitize=thread` useless.
package final class Lock: @unchecked Sendable {
    // SAFETY: the mutex is allocated once, never moved, and destroyed in deinit.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    package init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` holding the lock.
    @inline(__always)
    package func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

extension Duration {
    /// The duration in whole nanoseconds (negative durations count as 0; beyond UInt64, UInt64.max).
    package var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        // Saturates: a huge duration is "forever", never a wrapped small number.
        let (whole, overflow) = UInt64(max(0, seconds)).multipliedReportingOverflow(by: 1_000_000_000)
        let (total, carry) = whole.addingReportingOverflow(UInt64(max(0, attoseconds)) / 1_000_000_000)
        return overflow || carry ? .max : total
    }
}

/// Why a file must not be trusted by a process running as root, or nil when it may be:
/// it must be owned by root and not writable by group or others (as sshd and sudo require).
package func untrustedFileReason(_ path: String, effectiveUser: uid_t = geteuid()) -> String? {
    guard effectiveUser == 0 else { return nil }
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    if info.st_uid != 0 { return "it is owned by uid \(info.st_uid), not root" }
    if info.st_mode & (S_IWGRP | S_IWOTH) != 0 {
        return "it is writable by \(info.st_mode & S_IWOTH != 0 ? "everyone" : "its group") (mode \(String(info.st_mode & 0o7777, radix: 8)))"
    }
    return nil
}
