// P3: enumeration of 1 PF + N VFs in a fake sysfs tree, against lspci on the same tree (same run).
import BenchmarkSupport
import VirtioLinux

#if canImport(Glibc)
import Glibc
#endif

/// Every attribute a `list --json` entry shows, touched (a VF's deferred attributes are read).
func touchEveryField(_ functions: [VirtioFunction]) -> Int {
    var sum = 0
    for function in functions {
        sum &+= Int(function.classCode) &+ Int(function.subsystemVendorID ?? 0) &+ Int(function.subsystemID ?? 0) &+ Int(function.revision ?? 0)
        sum &+= (function.driverOverride?.utf8.count ?? 0) &+ (function.iommuGroup ?? 0) &+ (function.numaNode ?? 0) &+ (function.vfMSIXCount ?? 0)
    }
    return sum
}

func runP3(binary: String) async throws {
    print("\n## P3 — enumeration of 1 PF + N VFs in a fake sysfs tree, against lspci on the same tree\n")
    print("`functions()` is what `virtio-admin list` reads; \"all fields\" also reads every VF attribute `list --json` shows.")
    print("Reads: attribute files opened + links read, per function (SysfsReadCounter). Best of 5.\n")
    var processes: [[String]] = []
    row(["functions", "lspci -A linux-sysfs -d 1af4:", "functions()", "ratio (goal ≤ 0.5)", "reads/function",
         "all fields", "ratio", "reads/function"])
    row(["---", "---", "---", "---", "---", "---", "---", "---"])
    for vfs in [255, 1023, 4095] {
        let root = try makeTree(vfs: vfs)
        let count = Double(vfs + 1)
        let theirs = await best(5) { await measure { _ = runProcess("/usr/bin/lspci", ["-A", "linux-sysfs", "-O", "sysfs.path=\(root)/bus/pci", "-d", "1af4:"]) } }
        let ours = try await best(5) { try await measure { _ = try SysfsEnumerator(root: root).functions() } }
        var checksum = 0
        let full = try await best(5) { try await measure { checksum &+= touchEveryField(try SysfsEnumerator(root: root).functions()) } }
        let listing = SysfsReadCounter()
        let functions = try SysfsEnumerator(root: root).functions(counter: listing)
        let listingReads = Double(listing.reads) / count
        let everything = SysfsReadCounter()
        checksum &+= touchEveryField(try SysfsEnumerator(root: root).functions(counter: everything))
        guard functions.count == vfs + 1, checksum != 0 else { print("P3: enumeration found \(functions.count) functions, expected \(vfs + 1)"); return }
        row(["\(vfs + 1)", f(theirs * 1000) + " ms", f(ours * 1000) + " ms (" + f(ours / count * 1e6, 1) + " µs each)", f(ours / theirs),
             f(listingReads, 2), f(full * 1000) + " ms", f(full / theirs), f(Double(everything.reads) / count, 2)])
        if access(binary, X_OK) == 0 {
            let table = await best(5) { await measure { _ = runProcess(binary, ["--sysfs-root", root, "list", "--backend", "sysfs"]) } }
            let json = await best(5) { await measure { _ = runProcess(binary, ["--sysfs-root", root, "list", "--backend", "sysfs", "--json"]) } }
            processes.append(["\(vfs + 1)", f(theirs * 1000) + " ms", f(table * 1000) + " ms", f(table / theirs), f(json * 1000) + " ms", f(json / theirs)])
        }
        _ = runProcess("/bin/rm", ["-rf", root])
    }
    guard !processes.isEmpty else { return }
    print("\nThe same trees, process against process (\(binary)):\n")
    row(["functions", "lspci", "`virtio-admin list`", "ratio", "`virtio-admin list --json`", "ratio"])
    row(["---", "---", "---", "---", "---", "---"])
    processes.forEach(row)
}
