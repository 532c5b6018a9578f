import PCIConfig

// The public way to run a policy application: PFs by address. (`pfs(named:)` and
// `run(_:progress:)` take the enumerator's `VirtioFunction`, which is `package`.) In a file
// of its own, so that merges of PolicyApplication.swift never touch it.
extension PolicyApplication {
    /// Applies the policy to the PFs named (each must be a PF in the sysfs view), or to
    /// every PF in the view when `pfs` is empty: each PF's admin queue is opened once, its
    /// VFs' commands are in flight together (``maxInFlight`` VFs at once), and a PF no rule
    /// matches is reported unchanged.
    /// - Parameters:
    ///   - pfs: the PFs to work on; empty = every PF in the view.
    ///   - progress: called with (PF, VFs done, VFs in all) as VFs finish.
    /// - Returns: one report per PF, in the order worked on.
    /// - Throws: ``VirtioAdminError`` when a named address is not a PF in the view, or the
    ///   view cannot be read; a PF that fails to open or provision is reported, not thrown.
    public func apply(to pfs: [PCIAddress] = [], progress: (@Sendable (PCIAddress, Int, Int) -> Void)? = nil)
        async throws(VirtioAdminError) -> [PFApplyReport] {
        await run(try self.pfs(named: pfs), progress: progress)
    }
}
