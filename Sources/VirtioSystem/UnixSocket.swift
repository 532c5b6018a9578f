import CVirtioSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Stream sockets in the file system (`AF_UNIX`): the service's socket and its clients.
/// Descriptors are close-on-exec; sends never raise SIGPIPE (a peer that went away is an
/// error of that send); EINTR is retried.
package enum UnixSocket {
    /// A `sockaddr_un` for `path`, or ENAMETOOLONG when it does not fit.
    static func address(_ path: String) throws(SystemCallError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemCallError(call: "bind", path: path, errno: .fileNameTooLong)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        return address
    }

    static func makeSocket(_ path: String) throws(SystemCallError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemCallError(call: "socket", path: path, errno: errno) }
        return fd
    }

    /// Connects to the socket at `path`; reads on it give up after `receiveTimeout`.
    package static func connect(to path: String, receiveTimeout: Duration? = nil) throws(SystemCallError) -> Int32 {
        var address = try address(path)
        let fd = try makeSocket(path)
        if let receiveTimeout { setReceiveTimeout(fd, receiveTimeout) }
        let connected = retryingInterrupts {
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        // A connect retried after a signal may find the first one went through (EISCONN):
        // the socket is connected all the same.
        if case .failure(let code) = connected, code != .socketIsConnected {
            Glibc.close(fd)
            throw SystemCallError(call: "connect", path: path, errno: code)
        }
        return fd
    }

    /// Binds and listens on `path` (replacing a stale socket there; mode 0600, its
    /// directory made mode 0700 when missing).
    package static func listen(at path: String, backlog: Int32 = 1024) throws(SystemCallError) -> Int32 {
        Sys.makeParentDirectory(of: path, permissions: .ownerReadWriteExecute)
        var address = try address(path)
        Glibc.unlink(path)
        let fd = try makeSocket(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SystemCallError(call: "bind", path: path, errno: code)
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SystemCallError(call: "listen", path: path, errno: code)
        }
        chmod(path, 0o600)
        return fd
    }

    /// The next client of `listener` (close-on-exec), or why accept failed.
    package static func accept(_ listener: Int32) -> Result<Int32, Errno> {
        retryingInterrupts { csystem_accept_cloexec(listener) }
    }

    /// Reads on `fd` give up (return what came) after `timeout`, to the microsecond (at
    /// least one: a timeout of 0 would mean none).
    package static func setReceiveTimeout(_ fd: Int32, _ timeout: Duration) {
        let microseconds = max(1, timeout.nanoseconds / 1000)
        var limit = timeval(tv_sec: Int(min(microseconds / 1_000_000, UInt64(Int32.max))), tv_usec: Int(microseconds % 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends all of `bytes`; false when the peer went away or the send failed.
    @discardableResult
    package static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let result = retryingInterrupts {
                bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            }
            guard case .success(let count) = result, count > 0 else { return false }
            sent += count
        }
        return true
    }

    /// One newline-terminated line (at most about `limit` bytes), without the newline (and
    /// without a carriage return before it); what came before the peer closed, or before the
    /// receive timeout, otherwise.
    package static func readLine(_ fd: Int32, limit: Int) -> String {
        var bytes = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 1024)
        while bytes.count < limit {
            let got = buffer.withUnsafeMutableBytes { Sys.read(fd, into: $0) }
            if got <= 0 { break }
            bytes += buffer[0..<got]
            if bytes.last == 0x0a { break }
        }
        while let last = bytes.last, last == 0x0a || last == 0x0d { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Closes a socket.
    package static func close(_ fd: Int32) { Glibc.close(fd) }
}
