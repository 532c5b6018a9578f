// P3's measured code: the enumerator is `package` access in the main package, so the ratios
// program reaches it through these functions (this target builds there; docs/public-api.md).
import VirtioLinux

/// Every attribute a `list --json` entry shows, touched (a VF's deferred attributes are read).
func touchEveryField(_ functions: [VirtioFunction]) -> Int {
    var sum = 0
    for function in functions {
        sum &+= Int(function.classCode) &+ Int(function.subsystemVendorID ?? 0) &+ Int(function.subsystemID ?? 0) &+ Int(function.revision ?? 0)
        sum &+= (function.driverOverride?.utf8.count ?? 0) &+ (function.iommuGroup ?? 0) &+ (function.numaNode ?? 0) &+ (function.vfMSIXCount ?? 0)
    }
    return sum
}

/// P3: enumerates the view under `root` and reads every field `list --json` shows; returns a
/// checksum (non-zero when anything was read).
public func enumerateEveryField(root: String) throws -> Int {
    touchEveryField(try SysfsEnumerator(root: root).functions())
}

/// P3: the functions found under `root`, and the sysfs reads (files opened + links read) of a
/// listing and of a listing with every field read; `checksum` is non-zero when fields were read.
public func enumerationReads(root: String) throws -> (functions: Int, listingReads: Int, everythingReads: Int, checksum: Int) {
    let listing = SysfsReadCounter()
    let functions = try SysfsEnumerator(root: root).functions(counter: listing)
    let everything = SysfsReadCounter()
    let checksum = touchEveryField(try SysfsEnumerator(root: root).functions(counter: everything))
    return (functions.count, listing.reads, everything.reads, checksum)
}
