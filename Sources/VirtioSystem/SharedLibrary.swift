#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A shared library loaded with `dlopen` (`RTLD_NOW | RTLD_LOCAL`).
package struct SharedLibrary: @unchecked Sendable {
    // SAFETY: a dlopen handle; dlsym and dlclose may be called from any thread.
    private let handle: UnsafeMutableRawPointer

    /// Why a library did not load: dlerror's sentence.
    package struct LoadError: Error, Sendable {
        package var reason: String
    }

    /// Loads the library at `path`.
    package init(path: String) throws(LoadError) {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw LoadError(reason: dlerror().map { String(cString: $0) } ?? "dlopen failed")
        }
        self.handle = handle
    }

    /// The address of the symbol `name`, or nil when the library has none.
    package func symbol(_ name: String) -> UnsafeMutableRawPointer? { dlsym(handle, name) }

    /// Unloads the library; nothing it holds may be used afterwards.
    package func close() { dlclose(handle) }
}
