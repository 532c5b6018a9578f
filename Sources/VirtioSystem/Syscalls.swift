import CVirtioSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Calls `body` again while it fails with EINTR: its value when it is not negative, or the
/// errno it failed with. Every wrapper below that can be interrupted goes through it.
@inline(__always)
package func retryingInterrupts<T: FixedWidthInteger>(_ body: () -> T) -> Result<T, Errno> {
    while true {
        let value = body()
        if value >= 0 { return .success(value) }
        let code = Errno(rawValue: Glibc.errno)
        if code != .interrupted { return .failure(code) }
    }
}

/// The project's system calls (files, sysfs, memory maps, ioctl, eventfd, poll); EINTR is
/// retried everywhere. Locks, threads, sockets, lock files and shared libraries have their
/// own types in this module.
package enum Sys {
    // MARK: Opening and closing

    /// Opens `path` (always close-on-exec).
    package static func open(_ path: String, _ mode: FileDescriptor.AccessMode, options: FileDescriptor.OpenOptions = [],
                             permissions: FilePermissions? = nil) throws(SystemCallError) -> FileDescriptor {
        try naming("open", path) {
            // The C string as given: FilePath's separator normalisation is quadratic in a
            // debug build of swift-system for a path with `//` (the tests' temporary paths).
            try path.withCString { (cPath: UnsafePointer<CChar>) throws -> FileDescriptor in
                try FileDescriptor.open(cPath, mode, options: options.union(.closeOnExec), permissions: permissions, retryOnInterrupt: true)
            }
        }
    }

    /// Closes `fd`, ignoring errors (Linux frees the descriptor even when close fails).
    package static func close(_ fd: FileDescriptor) { try? fd.close() }

    // MARK: Whole files

    /// At most `limit` bytes of `path`.
    package static func readFile(_ path: String, limit: Int = 1 << 20) throws(SystemCallError) -> [UInt8] {
        let fd = try open(path, .readOnly)
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while result.count < limit {
            let wanted = min(chunk.count, limit - result.count)
            let got = try naming("read", path) { try chunk.withUnsafeMutableBytes { try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<wanted])) } }
            if got == 0 { break }
            result.append(contentsOf: chunk[0..<got])
        }
        return result
    }

    /// A text file of at most 64 KiB (sysfs and proc files).
    package static func readText(_ path: String) throws(SystemCallError) -> String {
        String(decoding: try readFile(path, limit: 64 * 1024), as: UTF8.self)
    }

    /// Writes `text` to an existing file in one write (sysfs attributes take one write).
    package static func writeText(_ text: String, to path: String) throws(SystemCallError) {
        let fd = try open(path, .writeOnly)
        defer { close(fd) }
        _ = try naming("write", path) { try Array(text.utf8).withUnsafeBytes { try fd.write($0) } }
    }

    /// Writes a short text file in one write, emptying it first (`create`: making it, mode
    /// 0644); a short write is EIO.
    package static func writeSmallFile(_ path: String, _ text: String, create: Bool = false) throws(SystemCallError) {
        let fd = try open(path, .writeOnly, options: create ? [.truncate, .create] : [.truncate], permissions: create ? [.ownerReadWrite, .groupRead, .otherRead] : nil)
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = try naming("write", path) { try bytes.withUnsafeBytes { try fd.write($0) } }
        if written != bytes.count { throw SystemCallError(call: "write", path: path, errno: .ioError) }
    }

    /// Creates or replaces `path` with `bytes` (all of them, however many writes it takes).
    package static func writeFile(_ bytes: [UInt8], to path: String, permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead]) throws(SystemCallError) {
        let fd = try open(path, .writeOnly, options: [.create, .truncate], permissions: permissions)
        defer { close(fd) }
        _ = try naming("write", path) { try fd.writeAll(bytes) }
    }

    /// Creates or replaces the text file `path` (mode 0644).
    package static func writeFile(_ text: String, to path: String) throws(SystemCallError) {
        try writeFile(Array(text.utf8), to: path)
    }

    /// Replaces `path` atomically: writes a temporary file beside it, then renames it over
    /// `path`. A process killed at any point leaves the old file or the new one, whole, and
    /// no temporary file survives a failure. (No fsync: what the project writes this way
    /// need not survive a power loss.)
    package static func writeAtomically(_ bytes: [UInt8], to path: String, permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead]) throws(SystemCallError) {
        let temporary = path + ".tmp.\(getpid())"
        do { try writeFile(bytes, to: temporary, permissions: permissions) } catch {
            unlink(temporary)
            throw error
        }
        guard Glibc.rename(temporary, path) == 0 else {
            let saved = Glibc.errno
            unlink(temporary)
            throw SystemCallError(call: "rename", path: path, errno: saved)
        }
    }

    // MARK: Directories and links

    /// Names in a directory (without `.` and `..`), sorted.
    package static func listDirectory(_ path: String) throws(SystemCallError) -> [String] {
        guard let directory = opendir(path) else { throw SystemCallError(call: "opendir", path: path, errno: Glibc.errno) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Makes `path` and every missing directory above it (mode 0755).
    package static func makeDirectories(_ path: String) throws(SystemCallError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && Glibc.errno != EEXIST {
                throw SystemCallError(call: "mkdir", path: current, errno: Glibc.errno)
            }
        }
    }

    /// Makes a new, empty directory `prefix` + six random characters (mode 0700); its path.
    package static func makeTemporaryDirectory(prefix: String) throws(SystemCallError) -> String {
        var template = Array((prefix + "XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemCallError(call: "mkdtemp", path: prefix + "XXXXXX", errno: Glibc.errno) }
        return String(cString: made)
    }

    /// Removes `path` and, when it is a directory, everything under it (links are removed,
    /// never followed). What cannot be removed stays.
    package static func removeTree(_ path: String) {
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        if status.st_mode & S_IFMT == S_IFDIR {
            for name in (try? listDirectory(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            Glibc.unlink(path)
        }
    }

    /// Makes the directory `path` lies in (one level, as /run/virtio-admin) if it is missing;
    /// a failure shows when the file itself is made.
    package static func makeParentDirectory(of path: String, permissions: FilePermissions) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        mkdir(String(path[..<slash]), permissions.rawValue)
    }

    /// The target of a symbolic link, or `nil` when `path` is not a link.
    package static func readLink(_ path: String) -> String? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(PATH_MAX) + 1) { buffer -> String? in
            let length = readlink(path, buffer.baseAddress!, buffer.count - 1)
            guard length > 0 else { return nil }
            return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress!, count: length), as: UTF8.self)
        }
    }

    /// Makes `path` a symbolic link to `target`, replacing what was there.
    package static func symlink(target: String, at path: String) throws(SystemCallError) {
        Glibc.unlink(path)
        guard Glibc.symlink(target, path) == 0 else { throw SystemCallError(call: "symlink", path: path, errno: Glibc.errno) }
    }

    /// Removes `path` if it exists.
    package static func unlink(_ path: String) { Glibc.unlink(path) }

    /// Sets a file's permission bits; false when that failed.
    @discardableResult
    package static func setPermissions(_ path: String, _ permissions: FilePermissions) -> Bool { chmod(path, permissions.rawValue) == 0 }

    /// Whether `path` exists (a dangling link counts).
    package static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Whether `name` exists under the directory descriptor `directory` (the last component
    /// not followed, as ``exists(_:)``).
    package static func exists(at directory: Int32, _ name: String) -> Bool {
        var info = stat()
        return fstatat(directory, name, &info, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// Why `path` cannot be written (or, when it does not exist, created in its directory);
    /// nil when it can.
    package static func whyNotWritable(_ path: String) -> SystemCallError? {
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let target = access(path, F_OK) == 0 ? path : (directory.isEmpty ? "/" : directory)
        return access(target, W_OK) == 0 ? nil : SystemCallError(call: "access", path: target, errno: Glibc.errno)
    }

    /// The canonical path (symlinks resolved), or nil when it does not exist.
    package static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// A directory descriptor for relative lookups, or -1.
    package static func openDirectory(_ path: String) -> Int32 {
        (try? open(path, .readOnly, options: .directory))?.rawValue ?? -1
    }

    package static func closeFD(_ fd: Int32) { Glibc.close(fd) }

    /// A small file (sysfs attribute) under a directory descriptor, read into a stack buffer.
    package static func readSmallText(at directory: Int32, _ name: String) -> String? {
        guard case .success(let fd) = retryingInterrupts({ openat(directory, name, O_RDONLY | O_CLOEXEC) }) else { return nil }
        defer { Glibc.close(fd) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { buffer -> String? in
            var total = 0
            while total < buffer.count {
                guard case .success(let got) = retryingInterrupts({ Glibc.read(fd, buffer.baseAddress! + total, buffer.count - total) }) else { return nil }
                if got == 0 { break }
                total += got
            }
            return String(decoding: UnsafeBufferPointer(rebasing: buffer[0..<total]), as: UTF8.self)
        }
    }

    /// The target of a link under a directory descriptor (`nil` when it cannot be read, for
    /// whatever reason).
    package static func readLink(at directory: Int32, _ name: String) -> String? {
        (try? readLinkIfPresent(at: directory, name)) ?? nil
    }

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

    // MARK: Positioned I/O (config space, pagemap, VFIO regions)

    /// Exactly `count` bytes at `offset`; end of file is EIO.
    package static func preadExactly(_ fd: FileDescriptor, count: Int, offset: Int64, path: String) throws(SystemCallError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = try naming("pread", path) {
                try buffer.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: offset + Int64(done), into: UnsafeMutableRawBufferPointer(rebasing: $0[done...])) }
            }
            if got == 0 { throw SystemCallError(call: "pread", path: path, errno: .ioError) }
            done += got
        }
        return buffer
    }

    /// A little-endian integer at `offset`, or nil when fewer bytes came.
    package static func preadInteger<T: FixedWidthInteger>(_ fd: FileDescriptor, _ type: T.Type = T.self, offset: Int64) -> T? {
        var value = T.zero
        let got = withUnsafeMutableBytes(of: &value) { buffer in try? fd.read(fromAbsoluteOffset: offset, into: buffer) }
        return got == MemoryLayout<T>.size ? T(littleEndian: value) : nil
    }

    /// Writes a little-endian integer at `offset`; false when not all of it was written.
    @discardableResult
    package static func pwriteInteger<T: FixedWidthInteger>(_ fd: FileDescriptor, _ value: T, offset: Int64) -> Bool {
        var little = value.littleEndian
        let written = withUnsafeBytes(of: &little) { buffer in try? fd.write(toAbsoluteOffset: offset, buffer) }
        return written == MemoryLayout<T>.size
    }

    /// Reads what is there into `buffer` (a socket, an eventfd): the count, 0 at its end, -1 on error.
    package static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        (try? FileDescriptor(rawValue: fd).read(into: buffer)) ?? -1
    }

    // MARK: Memory maps

    /// The size of a page.
    package static var pageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }

    /// Maps `length` bytes of `fd` at `offset` shared, readable and writable (a BAR through
    /// sysfs `resourceN` or a VFIO region); `path` names it in the error.
    package static func mapShared(_ fd: FileDescriptor, length: Int, offset: Int64 = 0, path: String) throws(SystemCallError) -> UnsafeMutableRawPointer {
        let pointer = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, off_t(offset))
        guard let pointer, pointer != MAP_FAILED else { throw SystemCallError(call: "mmap", path: path, errno: Glibc.errno) }
        return pointer
    }

    /// `length` bytes of zeroed anonymous memory that a forked child does not share
    /// (MADV_DONTFORK: no copy-on-write copy of memory a device writes); with `hugePage`, one
    /// locked, populated huge page. Nil when none is available.
    package static func mapAnonymous(length: Int, hugePage: Bool = false) -> UnsafeMutableRawPointer? {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | (hugePage ? MAP_HUGETLB | MAP_POPULATE | MAP_LOCKED : 0)
        let pointer = mmap(nil, length, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let pointer, pointer != MAP_FAILED else { return nil }
        _ = madvise(pointer, length, MADV_DONTFORK)
        return pointer
    }

    /// Unmaps (and unlocks) what a map call returned.
    package static func unmap(_ pointer: UnsafeMutableRawPointer, length: Int, locked: Bool = false) {
        if locked { munlock(pointer, length) }
        munmap(pointer, length)
    }

    /// `length` bytes aligned to `alignment` (a power of two, at least the pointer size)
    /// from the C heap, or nil when there is not that much; release with ``freeAligned(_:)``.
    package static func allocateAligned(_ length: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        var pointer: UnsafeMutableRawPointer?
        return posix_memalign(&pointer, alignment, length) == 0 ? pointer : nil
    }

    package static func freeAligned(_ pointer: UnsafeMutableRawPointer) { free(pointer) }

    // MARK: ioctl, eventfd, poll

    /// `ioctl(fd, request, argument)`, retried on EINTR; `call` names the request in the error.
    @discardableResult
    package static func ioctl(_ fd: Int32, _ request: UInt, _ argument: UnsafeMutableRawPointer?, call: String, path: String) throws(SystemCallError) -> Int32 {
        try retryingInterrupts { csystem_ioctl_pointer(fd, request, argument) }.mapError { SystemCallError(call: "ioctl(\(call))", path: path, errno: $0) }.get()
    }

    /// `ioctl(fd, request, value)` with an integer argument, retried on EINTR.
    @discardableResult
    package static func ioctl(_ fd: Int32, _ request: UInt, value: UInt, call: String, path: String) throws(SystemCallError) -> Int32 {
        try retryingInterrupts { csystem_ioctl_value(fd, request, value) }.mapError { SystemCallError(call: "ioctl(\(call))", path: path, errno: $0) }.get()
    }

    /// `ioctl(fd, request, string)` with a C string argument, retried on EINTR.
    package static func ioctl(_ fd: Int32, _ request: UInt, string: String, call: String, path: String) throws(SystemCallError) -> Int32 {
        try retryingInterrupts { csystem_ioctl_string(fd, request, string) }.mapError { SystemCallError(call: "ioctl(\(call))", path: path, errno: $0) }.get()
    }

    /// A new eventfd (counter 0, close-on-exec).
    package static func eventFD() throws(SystemCallError) -> Int32 {
        try retryingInterrupts { csystem_eventfd() }.mapError { SystemCallError(call: "eventfd", path: "", errno: $0) }.get()
    }

    /// Waits until `fd` is readable (true) or `timeoutMilliseconds` pass (false; -1 waits
    /// forever). An interrupted wait goes on for what is left of the time.
    package static func poll(_ fd: Int32, timeoutMilliseconds: Int32) -> Bool {
        let deadline = monotonicNanoseconds() &+ UInt64(max(0, timeoutMilliseconds)) &* 1_000_000
        var timeout = timeoutMilliseconds
        while true {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = Glibc.poll(&descriptor, 1, timeout)
            if ready >= 0 { return ready > 0 && descriptor.revents & Int16(POLLIN | POLLHUP) != 0 }
            guard Glibc.errno == EINTR else { return false }
            if timeout >= 0 {
                let now = monotonicNanoseconds()
                timeout = now >= deadline ? 0 : Int32((deadline - now + 999_999) / 1_000_000)
            }
        }
    }

    // MARK: Process

    /// errno as the last failed C call (a library's, such as libudev's) left it.
    package static var lastError: Int32 { Glibc.errno }

    package static var isRoot: Bool { geteuid() == 0 }
    package static var effectiveUserID: UInt32 { geteuid() }
    package static var processID: Int32 { getpid() }

    /// Makes room for `count` open descriptors and returns how many the process may hold
    /// now (its soft `RLIMIT_NOFILE`). A soft limit below `count` is raised to it, as far as
    /// the hard limit allows (a limit is never lowered). Then the descriptor table is grown to
    /// that size in one step: `fd` is copied to the highest number with `F_DUPFD` (which never
    /// replaces an open descriptor) and the copy closed.
    ///
    /// Growing the table ahead matters to a server taking many clients at once: in a process
    /// with threads, the kernel waits for an RCU grace period each time the table doubles
    /// (`expand_fdtable`), 8–11 ms each on a two-core VM, and the server's accepts would wait
    /// through every doubling from 64 to 2048. The table never shrinks, so this is paid once.
    package static func reserveFileDescriptors(_ count: Int, duplicating fd: Int32) -> Int {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        let infinity = rlim_t.max  // RLIM_INFINITY, which Swift imports as an overflowing literal
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        if limit.rlim_cur != infinity, limit.rlim_cur < rlim_t(count) {
            var raised = limit
            raised.rlim_cur = limit.rlim_max == infinity ? rlim_t(count) : min(rlim_t(count), limit.rlim_max)
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        let allowed = limit.rlim_cur == infinity ? count : Int(min(limit.rlim_cur, rlim_t(Int32.max)))
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, Int32(min(count, allowed) - 1))
        if copy >= 0 { Glibc.close(copy) }
        return allowed
    }

    /// How many descriptors the process has open (`/proc/self/fd`, without the one reading it).
    package static func openDescriptorCount() -> Int {
        max(0, ((try? listDirectory("/proc/self/fd")) ?? []).count - 1)
    }

    /// An environment variable, or nil when unset.
    package static func environment(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

    /// Writes `text` to stderr whole (unbuffered, as one line should reach journald).
    package static func writeStandardError(_ text: String) {
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { write(2, $0.baseAddress! + written, $0.count - written) }
            if result < 0 && Glibc.errno == EINTR { continue }
            if result <= 0 { return }
            written += result
        }
    }

    /// Ends the process with `status` (atexit handlers run).
    package static func exitProcess(_ status: Int32) -> Never { exit(status) }

    /// Sleeps the calling thread for `duration`, going on after a signal for what is left of
    /// the time (a thread of its own: never a task of the concurrency pool, which `Task.sleep` serves).
    package static func sleep(_ duration: Duration) {
        let nanoseconds = duration.nanoseconds
        var request = timespec(tv_sec: Int(min(nanoseconds / 1_000_000_000, UInt64(Int.max))), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && Glibc.errno == EINTR { request = remaining }
    }

    package static func sleepMilliseconds(_ milliseconds: Int) { sleep(.milliseconds(milliseconds)) }

    /// Sleeps `microseconds`, going on after a signal for what is left of the time.
    package static func sleepMicroseconds(_ microseconds: Int) { sleep(.microseconds(microseconds)) }

    /// Gives the processor to another thread.
    package static func yieldThread() { sched_yield() }

    /// Sets the calling thread's nice value (on Linux, `PRIO_PROCESS` with 0 is the calling
    /// thread, not the process). Returns whether it was set: a value below the current one
    /// needs CAP_SYS_NICE.
    @discardableResult
    package static func setThreadNice(_ nice: Int32) -> Bool {
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) == 0
    }

    /// A spin-wait hint to the processor (x86 `pause`, Arm `yield`): for polling loops
    /// that keep their thread.
    @inline(__always) package static func relaxProcessor() { csystem_cpu_relax() }
}

/// The last path component.
package func baseName(_ path: String) -> String {
    String(path.split(separator: "/").last ?? Substring(path))
}

/// Why a file must not be trusted by a process running as root, or nil when it may be:
/// it must be owned by root and not writable by group or others (as sshd and sudo require).
package func untrustedFileReason(_ path: String, effectiveUser: UInt32 = geteuid()) -> String? {
    guard effectiveUser == 0 else { return nil }
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    if info.st_uid != 0 { return "it is owned by uid \(info.st_uid), not root" }
    if info.st_mode & (S_IWGRP | S_IWOTH) != 0 {
        return "it is writable by \(info.st_mode & S_IWOTH != 0 ? "everyone" : "its group") (mode \(String(info.st_mode & 0o7777, radix: 8)))"
    }
    return nil
}

/// The nanoseconds of CLOCK_MONOTONIC: the one clock of the project's deadlines (the
/// device model's completion thread waits on a condition variable on the same clock).
package func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
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

extension FileDescriptor.OpenOptions {
    /// O_SYNC: each write reaches the file (or device) before it returns (swift-system names it on Darwin only).
    package static var synchronized: Self { Self(rawValue: O_SYNC) }
}
