#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Initialises a mutex that spins briefly before it sleeps (glibc's adaptive mutex): the
/// project's critical sections are short, and a waiter that sleeps on the futex costs a
/// wake-up far longer than the section it waited for.
private func initializeSpinningMutex(_ mutex: UnsafeMutablePointer<pthread_mutex_t>) {
    var attributes = pthread_mutexattr_t()
    pthread_mutexattr_init(&attributes)
    #if canImport(Glibc)
    pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
    #endif
    pthread_mutex_init(mutex, &attributes)
    pthread_mutexattr_destroy(&attributes)
}

/// A mutual-exclusion lock over `pthread_mutex_t`.
///
/// The project uses it instead of `Synchronization.Mutex` because ThreadSanitizer
/// intercepts pthread locks and so sees the ordering they create; the stdlib's futex-based
/// `Mutex` is invisible to it, which turns every guarded access into a false race report
/// and makes `swift test --sanitize=thread` useless.
package final class Lock: @unchecked Sendable {
    // SAFETY: the mutex is allocated once, never moved, and destroyed in deinit.
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

    package init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        initializeSpinningMutex(mutex)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` holding the lock (inlined into the caller's module: no generic call).
    @inlinable
    package func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// A pthread mutex with a condition variable whose timed waits use CLOCK_MONOTONIC (the
/// clock of ``monotonicNanoseconds()``), visible to ThreadSanitizer like ``Lock``.
package final class ConditionLock: @unchecked Sendable {
    // SAFETY: both are allocated once, never moved, and destroyed in deinit.
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    package init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        initializeSpinningMutex(mutex)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    package func lock() { pthread_mutex_lock(mutex) }
    package func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` holding the lock (inlined into the caller's module: no generic call).
    @inlinable
    package func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for a signal (the lock held; it is released while waiting). Wakes spuriously
    /// too: wait in a loop over the condition.
    package func wait() { pthread_cond_wait(condition, mutex) }

    /// Waits for a signal until ``monotonicNanoseconds()`` reaches `deadline` (the lock held).
    package func wait(untilMonotonicNanoseconds deadline: UInt64) {
        var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        pthread_cond_timedwait(condition, mutex, &time)
    }

    /// Wakes one waiter.
    package func signal() { pthread_cond_signal(condition) }
    /// Wakes every waiter.
    package func broadcast() { pthread_cond_broadcast(condition) }
}

/// Objects the process keeps track of without keeping them alive (weak references), for a
/// handler that must reach every one of them (an interrupt closing every open driver).
package final class WeakRegistry<Object: AnyObject>: @unchecked Sendable {
    struct Entry { weak var object: Object? }
    // Guarded by `lock`.
    var entries: [ObjectIdentifier: Entry] = [:]
    let lock = Lock()

    package init() {}
    package func add(_ object: Object) { lock.withLock { entries[ObjectIdentifier(object)] = Entry(object: object) } }
    package func remove(_ object: Object) { lock.withLock { _ = entries.removeValue(forKey: ObjectIdentifier(object)) } }
    /// The objects still alive.
    package func all() -> [Object] { lock.withLock { entries.values.compactMap(\.object) } }
}
