import VirtioSystem

// Entry points of the public API that stand in for `package` values (docs/public-api.md).
// In a file of their own, so that merges of the model's other files never touch them.

extension SimulatedSRIOVDevice {
    /// Writes the sysfs view of this device's current state under `root` (which plays
    /// `/sys`): the PF and its enabled VFs as Linux shows them (`bus/pci/devices`, `config`,
    /// `resource`, `sriov_*`, `physfn`/`virtfnN`), for code that enumerates functions.
    /// - Throws: ``SystemCallError`` naming the path that could not be written.
    public func writeSysfs(to root: String) throws(SystemCallError) {
        try sysfsTree().write(to: root)
    }
}
