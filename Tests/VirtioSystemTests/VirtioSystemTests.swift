import Glibc
import SystemPackage
import Testing
@testable import VirtioSystem

/// A fresh directory under /tmp, removed when the test ends.
private func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let directory = try Sys.makeTemporaryDirectory(prefix: "/tmp/virtio-system-tests-")
    defer { Sys.removeTree(directory) }
    return try body(directory)
}

struct SystemCallTests {
    @Test func aFailedCallReadsAsOneSentenceNamingCallPathAndErrno() {
        let path = "/nonexistent-virtio-admin/config"
        let error = #expect(throws: SystemCallError.self) { try Sys.readFile(path) }
        #expect(error?.call == "open")
        #expect(error?.path == path)
        #expect(error?.errno == .noSuchFileOrDirectory)
        #expect(error?.isNotFound == true)
        #expect(error?.description == "open(/nonexistent-virtio-admin/config) failed: No such file or directory")
    }

    @Test func interruptedCallsAreRetriedAndOtherErrorsAreNot() {
        var calls = 0
        let retried = retryingInterrupts { () -> Int32 in
            calls += 1
            if calls < 3 { errno = EINTR; return -1 }
            return 7
        }
        #expect(calls == 3, "EINTR twice, then the value")
        #expect((try? retried.get()) == 7)

        calls = 0
        let failed = retryingInterrupts { () -> Int32 in
            calls += 1
            errno = EBADF
            return -1
        }
        #expect(calls == 1)
        #expect(throws: Errno.badFileDescriptor) { try failed.get() }
    }

    @Test func atomicWriteReplacesTheFileWholeAndLeavesNoTemporaryFile() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/state"
            try Sys.writeFile("old contents\n", to: path)
            try Sys.writeAtomically(Array("new\n".utf8), to: path)
            #expect(try Sys.readText(path) == "new\n")
            #expect(try Sys.listDirectory(directory) == ["state"])

            // A rename that fails (a non-empty directory is in the way) names the target and
            // removes its temporary file.
            let blocked = directory + "/blocked"
            try Sys.makeDirectories(blocked + "/inside")
            let error = #expect(throws: SystemCallError.self) { try Sys.writeAtomically(Array("x".utf8), to: blocked) }
            #expect(error?.call == "rename")
            #expect(error?.path == blocked)
            #expect(try Sys.listDirectory(directory) == ["blocked", "state"])
        }
    }

    @Test func smallFileWritesEmptyTheFileAndCreateOnlyWhenAsked() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/attribute"
            #expect(throws: SystemCallError(call: "open", path: path, errno: .noSuchFileOrDirectory)) { try Sys.writeSmallFile(path, "1") }
            try Sys.writeSmallFile(path, "1234\n", create: true)
            try Sys.writeSmallFile(path, "0")
            #expect(try Sys.readText(path) == "0")
        }
    }

    @Test func positionedReadsAndWritesAreLittleEndianAndAShortReadIsAnError() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/config"
            try Sys.writeFile([UInt8](repeating: 0, count: 8), to: path)
            let fd = try Sys.open(path, .readWrite)
            defer { Sys.close(fd) }
            #expect(Sys.pwriteInteger(fd, UInt16(0x0406), offset: 4))
            #expect(try Sys.preadExactly(fd, count: 8, offset: 0, path: path) == [0, 0, 0, 0, 0x06, 0x04, 0, 0])
            #expect(Sys.preadInteger(fd, UInt16.self, offset: 4) == 0x0406)
            #expect(Sys.preadInteger(fd, UInt32.self, offset: 6) == nil, "only 2 of 4 bytes are there")
            #expect(throws: SystemCallError(call: "pread", path: path, errno: .ioError)) {
                try Sys.preadExactly(fd, count: 4, offset: 6, path: path)
            }
        }
    }

    @Test func removeTreeRemovesDirectoriesButNeverFollowsLinks() throws {
        try withTemporaryDirectory { directory in
            let outside = directory + "/outside"
            try Sys.writeFile("keep", to: outside)
            let tree = directory + "/tree"
            try Sys.makeDirectories(tree + "/a/b")
            try Sys.writeFile("x", to: tree + "/a/b/file")
            try Sys.symlink(target: outside, at: tree + "/a/link")
            try Sys.symlink(target: directory, at: tree + "/up")
            Sys.removeTree(tree)
            #expect(!Sys.exists(tree))
            #expect(try Sys.readText(outside) == "keep")
        }
    }

    @Test func ioctlFailureNamesTheRequest() throws {
        let fd = try Sys.open("/dev/null", .readOnly)
        defer { Sys.close(fd) }
        var value: Int32 = 0
        // A request /dev/null does not know (a terminal's window size).
        #expect(throws: SystemCallError(call: "ioctl(TIOCGWINSZ)", path: "/dev/null", errno: .inappropriateIOCTLForDevice)) {
            try Sys.ioctl(fd.rawValue, UInt(TIOCGWINSZ), &value, call: "TIOCGWINSZ", path: "/dev/null")
        }
    }
}

struct LockFileTests {
    @Test func aSecondHolderCannotTakeAHeldLockUntilItIsReleased() throws {
        try withTemporaryDirectory { directory throws in
            let path = directory + "/pf.lock"
            let first = FileLock(path: path)
            let second = FileLock(path: path)
            #expect(try first.tryLock())
            #expect(try second.tryLock() == false, "flock excludes a second open file, in one process too")
            first.unlock()
            #expect(try second.tryLock())
            var info = stat()
            #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        }
    }

    @Test func aLockInAMissingDirectoryNamesIt() {
        let error = #expect(throws: SystemCallError.self) { try FileLock(path: "/nonexistent-virtio-admin/pf.lock").tryLock() }
        #expect(error?.description == "open(/nonexistent-virtio-admin/pf.lock) failed: No such file or directory")
    }
}

struct UnixSocketTests {
    @Test func aClientAndTheListenerExchangeLines() async throws {
        let directory = try Sys.makeTemporaryDirectory(prefix: "/tmp/virtio-system-tests-")
        defer { Sys.removeTree(directory) }
        let path = directory + "/run/serve.sock"
        let listener = try UnixSocket.listen(at: path)
        defer { UnixSocket.close(listener) }
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600, "only its owner may connect")
        let served: String = await withCheckedContinuation { continuation in
            startThread {
                guard Sys.poll(listener, timeoutMilliseconds: 5000), case .success(let client) = UnixSocket.accept(listener) else {
                    continuation.resume(returning: "no client")
                    return
                }
                let line = UnixSocket.readLine(client, limit: 4096)
                UnixSocket.sendAll(client, Array("ok \(line)\r\n".utf8))
                UnixSocket.close(client)
                continuation.resume(returning: line)
            }
            startThread {
                guard let fd = try? UnixSocket.connect(to: path, receiveTimeout: .seconds(5)) else { return }
                UnixSocket.sendAll(fd, Array("ACTION=add\n".utf8))
                #expect(UnixSocket.readLine(fd, limit: 4096) == "ok ACTION=add")
                UnixSocket.close(fd)
            }
        }
        #expect(served == "ACTION=add")
    }

    @Test func connectingWhereNoneListensNamesThePath() {
        #expect(throws: SystemCallError(call: "connect", path: "/nonexistent-virtio-admin/serve.sock", errno: .noSuchFileOrDirectory)) {
            try UnixSocket.connect(to: "/nonexistent-virtio-admin/serve.sock")
        }
        let long = "/tmp/" + String(repeating: "x", count: 200)
        #expect(throws: SystemCallError(call: "bind", path: long, errno: .fileNameTooLong)) { try UnixSocket.listen(at: long) }
    }

    @Test func readsGiveUpAtTheReceiveTimeoutAndPollAtItsTimeout() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/quiet.sock"
            let listener = try UnixSocket.listen(at: path)
            defer { UnixSocket.close(listener) }
            var start = monotonicNanoseconds()
            #expect(Sys.poll(listener, timeoutMilliseconds: 100) == false, "no client")
            var elapsed = monotonicNanoseconds() - start
            #expect(elapsed >= 90_000_000 && elapsed < 2_000_000_000)

            let fd = try UnixSocket.connect(to: path, receiveTimeout: .milliseconds(200))
            defer { UnixSocket.close(fd) }
            start = monotonicNanoseconds()
            #expect(UnixSocket.readLine(fd, limit: 4096) == "", "the listener never answers")
            elapsed = monotonicNanoseconds() - start
            #expect(elapsed >= 150_000_000 && elapsed < 2_000_000_000, "\(elapsed) ns")
        }
    }
}

struct SharedLibraryTests {
    @Test func aLibraryThatDoesNotLoadSaysWhy() {
        let error = #expect(throws: SharedLibrary.LoadError.self) { try SharedLibrary(path: "/nonexistent-virtio-admin/plugin.so") }
        #expect(error?.reason.contains("/nonexistent-virtio-admin/plugin.so") == true)
        #expect(error?.reason.contains("No such file or directory") == true)
    }

    @Test func symbolsAreFoundByName() throws {
        let library = try SharedLibrary(path: "libc.so.6")
        #expect(library.symbol("getpid") != nil)
        #expect(library.symbol("virtio_admin_no_such_symbol") == nil)
    }
}

struct ThreadAndTimeTests {
    @Test func aTimedWaitEndsAtItsDeadlineAndASignalWakesAWaiter() async {
        let condition = ConditionLock()
        let start = monotonicNanoseconds()
        condition.withLock { condition.wait(untilMonotonicNanoseconds: start + 50_000_000) }
        #expect(monotonicNanoseconds() - start >= 50_000_000, "CLOCK_MONOTONIC deadline")

        nonisolated(unsafe) var ready = false
        let thread = JoinableThread {
            condition.withLock {
                while !ready { condition.wait() }
            }
        }
        #expect(thread != nil)
        #expect(thread?.isCurrent == false)
        condition.withLock {
            ready = true
            condition.signal()
        }
        thread?.join()
    }

    @Test func onThreadReturnsTheBodysValue() async {
        let value = await onThread { () -> Int in
            var total = 0
            for index in 1...100 { total += index }
            return total
        }
        #expect(value == 5050)
    }

    @Test func aThreadSleepLastsItsDuration() {
        let start = monotonicNanoseconds()
        Sys.sleep(.microseconds(20_500))
        let elapsed = monotonicNanoseconds() - start
        #expect(elapsed >= 20_500_000 && elapsed < 2_000_000_000, "\(elapsed) ns")
    }

    @Test func durationNanosecondsSaturates() {
        #expect(Duration.milliseconds(5).nanoseconds == 5_000_000)
        #expect(Duration.seconds(-1).nanoseconds == 0)
        #expect(Duration.seconds(Int64.max).nanoseconds == UInt64.max)
    }
}

struct MemoryAndEventTests {
    @Test func aSharedMapWritesThroughToTheFileAndAnonymousMemoryStartsZeroed() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/resource0"
            try Sys.writeFile([UInt8](repeating: 0, count: 4096), to: path)
            let fd = try Sys.open(path, .readWrite)
            defer { Sys.close(fd) }
            let mapping = try Sys.mapShared(fd, length: 4096, path: path)
            mapping.storeBytes(of: UInt32(0x1af4_1041).littleEndian, toByteOffset: 8, as: UInt32.self)
            Sys.unmap(mapping, length: 4096)
            #expect(try Sys.preadExactly(fd, count: 4, offset: 8, path: path) == [0x41, 0x10, 0xf4, 0x1a])
            #expect(throws: SystemCallError(call: "mmap", path: "not a file", errno: .badFileDescriptor)) {
                try Sys.mapShared(FileDescriptor(rawValue: -1), length: 4096, path: "not a file")
            }

            let anonymous = try #require(Sys.mapAnonymous(length: 8192))
            #expect(UnsafeRawBufferPointer(start: anonymous, count: 8192).allSatisfy { $0 == 0 })
            Sys.unmap(anonymous, length: 8192)
        }
    }

    @Test func aFreshEventFDIsNotReadable() throws {
        let fd = try Sys.eventFD()
        defer { Sys.closeFD(fd) }
        #expect(Sys.poll(fd, timeoutMilliseconds: 10) == false, "its counter is 0")
    }
}

struct LayoutTests {
    /// The repository's root, from this file's path (Tests/VirtioSystemTests/…).
    static let root = String(#filePath.split(separator: "/").dropLast(3).joined(separator: "/")).withLeadingSlash

    /// Swift files under `directory`, recursively.
    static func swiftFiles(under directory: String) -> [String] {
        ((try? Sys.listDirectory(directory)) ?? []).flatMap { name -> [String] in
            let path = directory + "/" + name
            return name.hasSuffix(".swift") ? [path] : swiftFiles(under: path)  // (a file lists nothing)
        }
    }

    @Test func onlyVirtioSystemImportsGlibc() throws {
        let files = Self.swiftFiles(under: Self.root + "/Sources") + Self.swiftFiles(under: Self.root + "/Plugins")
        #expect(files.count > 50, "the sources are found")
        let importing = try files.filter { try Sys.readFile($0, limit: .max).split(separator: UInt8(ascii: "\n")).contains { $0.elementsEqual("import Glibc".utf8) } }
        #expect(!importing.isEmpty)
        #expect(importing.allSatisfy { $0.hasPrefix(Self.root + "/Sources/VirtioSystem/") }, "\(importing)")
    }
}

extension String {
    fileprivate var withLeadingSlash: String { hasPrefix("/") ? self : "/" + self }
}
