// P3: enumeration of 1 PF + N VFs in a fake sysfs tree, against lspci on the same tree (same run).
import BenchmarkSupport

#if canImport(Glibc)
import Glibc
#endif

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
        let ours = try await best(5) { try await measure { try enumerateFunctions(root: root) } }
        var checksum = 0
        let full = try await best(5) { try await measure { checksum &+= try enumerateEveryField(root: root) } }
        let reads = try enumerationReads(root: root)
        let listingReads = Double(reads.listingReads) / count
        checksum &+= reads.checksum
        guard reads.functions == vfs + 1, checksum != 0 else { print("P3: enumeration found \(reads.functions) functions, expected \(vfs + 1)"); return }
        row(["\(vfs + 1)", f(theirs * 1000) + " ms", f(ours * 1000) + " ms (" + f(ours / count * 1e6, 1) + " µs each)", f(ours / theirs),
             f(listingReads, 2), f(full * 1000) + " ms", f(full / theirs), f(Double(reads.everythingReads) / count, 2)])
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
