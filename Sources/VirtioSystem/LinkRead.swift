import Glibc

extension Sys {
    /// The target of a link under a directory descriptor: `nil` when there is no such link
    /// (ENOENT, ENOTDIR: nothing bound there); any other failure is thrown, so that a check
    /// that must find every bound driver does not take "could not read" for "none".
    package static func readLinkIfPresent(at directory: Int32, _ name: String) throws(SystemCallError) -> String? {
        try withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(PATH_MAX) + 1) { buffer throws(SystemCallError) -> String? in
            let length = readlinkat(directory, name, buffer.baseAddress!, buffer.count - 1)
            if length > 0 { return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress!, count: length), as: UTF8.self) }
            let error = errno
            if length == 0 || error == ENOENT || error == ENOTDIR { return nil }
            throw SystemCallError(call: "readlinkat", path: name, errno: error)
        }
    }
}
