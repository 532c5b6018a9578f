import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a new thread runs (boxed to cross pthread_create's `void *`).
private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

/// Starts `body` on a pthread; the thread's handle, or nil when none could be made.
func makeThread(_ body: @escaping () -> Void) -> pthread_t? {
    let box = Unmanaged.passRetained(ThreadBody(body))
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { argument in
        Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue().run()
        return nil
    }, box.toOpaque())
    guard result == 0 else {
        box.release()
        return nil
    }
    return thread
}

/// Runs `body` on a thread of its own, detached (blocking accept and udev reads stay off
/// the cooperative pool, which has only as many threads as cores).
package func startThread(_ body: @escaping @Sendable () -> Void) {
    guard let thread = makeThread(body) else { preconditionFailure("pthread_create failed: \(Errno(rawValue: errno))") }
    pthread_detach(thread)
}

/// Runs `body` on a thread of its own and waits for its value without holding a thread of
/// the Swift concurrency pool (a call that may block: a plugin's C code, a sysfs write the
/// kernel probes a driver in). If no thread can be made, it runs on the caller's.
package func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let run = { continuation.resume(returning: body()) }
        if let thread = makeThread(run) { pthread_detach(thread) } else { run() }
    }
}

/// A thread that can be joined (the device model's completion thread).
package final class JoinableThread: @unchecked Sendable {
    // SAFETY: set once in init, read afterwards only.
    private let thread: pthread_t

    /// Starts `body`; nil when no thread could be made.
    package init?(_ body: @escaping @Sendable () -> Void) {
        guard let thread = makeThread(body) else { return nil }
        self.thread = thread
    }

    /// Whether the caller runs on this thread (which cannot join itself).
    package var isCurrent: Bool { pthread_equal(thread, pthread_self()) != 0 }

    /// Waits for the thread to end (not from the thread itself).
    package func join() {
        precondition(!isCurrent, "a thread cannot join itself")
        pthread_join(thread, nil)
    }
}
