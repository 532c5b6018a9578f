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
public final class Lock: @unchecked Sendable {
    // SAFETY: the mutex is allocated once, never moved, and destroyed in deinit.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
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
    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
