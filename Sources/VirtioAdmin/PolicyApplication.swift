import PCIConfig
import ResourceManager
import VirtioAdminDriver
import VirtioLinux
import VirtioProvisioning
import VirtioSpec

/// What applying the policy did on one PF.
public struct PFApplyReport: Sendable {
    /// The PF.
    public var pf: PCIAddress
    /// The matching rule, described; `nil` when no rule matches the PF.
    public var rule: String?
    /// One outcome per VF the policy names, in VF order.
    public var outcomes: [VFOutcome]
    /// VF addresses by index (sysfs `virtfnN`).
    public var vfAddresses: [Int: PCIAddress]
    /// Admin commands sent for this PF's VFs (bring-up not counted).
    public var commands: Int
    /// The most commands the device held at once.
    public var peakInFlight: Int
    /// Wall time of the PF's work, opening included.
    public var elapsed: Duration
    /// Why the PF could not be opened (then there are no outcomes).
    public var error: String?

    /// VFs that were provisioned and needed changes.
    public var changed: Int { outcomes.filter { $0.succeeded && !$0.changes.isEmpty }.count }
    /// VFs that were provisioned and already held what the policy says.
    public var unchanged: Int { outcomes.filter { $0.succeeded && $0.changes.isEmpty }.count }
    /// VFs whose provisioning failed.
    public var failed: Int { outcomes.filter { !$0.succeeded }.count }
}

/// Applies a provisioning policy to the PFs present in a sysfs view: each PF is opened
/// once, and all its VFs' commands are in flight on its admin queue together
/// (`virtio-admin policy apply`; `planOnly` is `policy plan`).
public struct PolicyApplication: Sendable {
    /// The policy applied.
    public var policy: ProvisioningPolicy
    /// The sysfs view PFs are found in.
    public var sysfsRoot: String
    /// How a PF is reached (the Linux or the simulated opener).
    public var opener: @Sendable (PCIAddress) -> any PFOpener
    /// The plugins each PF is opened with (``builtInPlugins()`` by default).
    public var registry: @Sendable () -> PluginRegistry
    /// How each PF is opened.
    public var groupOptions: AdminGroup.Options
    /// VFs worked on at once (`nil`: as many as the PF's admin queue holds commands; 1: one
    /// command after another).
    public var maxInFlight: Int?
    /// Read each VF and report what would change, changing nothing (`policy plan`).
    public var planOnly: Bool

    /// An application of `policy` to the PFs of the sysfs view at `sysfsRoot`, each reached through `opener`.
    public init(policy: ProvisioningPolicy, sysfsRoot: String, opener: @escaping @Sendable (PCIAddress) -> any PFOpener,
                registry: @escaping @Sendable () -> PluginRegistry = { PluginRegistry(builtInPlugins()) },
                groupOptions: AdminGroup.Options = AdminGroup.Options(), maxInFlight: Int? = nil, planOnly: Bool = false) {
        self.policy = policy
        self.sysfsRoot = sysfsRoot
        self.opener = opener
        self.registry = registry
        self.groupOptions = groupOptions
        self.maxInFlight = maxInFlight
        self.planOnly = planOnly
    }

    /// The PFs to work on: those named (each must be a PF in the view), or every PF in it.
    /// A PF found in the view is read without its VFs (`virtfns` empty): the policy matches
    /// the PF itself, and opening it reads its VFs (after its lock is taken), so they are
    /// not read twice.
    package func pfs(named: [PCIAddress]) throws(VirtioAdminError) -> [VirtioFunction] {
        let enumerator = SysfsEnumerator(root: sysfsRoot)
        if named.isEmpty {
            do { return try enumerator.physicalFunctions(withVFs: false) } catch { throw .sysfsView(root: sysfsRoot, error) }
        }
        var result: [VirtioFunction] = []
        for address in named {
            let function: VirtioFunction
            do { function = try enumerator.function(at: address) } catch { throw .notInSysfs(pf: address, root: sysfsRoot, error) }
            if function.role == .vf { throw .vfNotPF(address: address, pf: function.physfn) }
            guard function.role == .pf else { throw .notAPF(address: address) }
            result.append(function)
        }
        return result
    }

    /// Runs the policy over `pfs`; `progress` gets (PF, VFs done, VFs in all).
    package func run(_ pfs: [VirtioFunction], progress: (@Sendable (PCIAddress, Int, Int) -> Void)? = nil) async -> [PFApplyReport] {
        var reports: [PFApplyReport] = []
        for pf in pfs {
            guard let rule = policy.rule(for: pf) else {
                // A PF found without its VFs: read them for the report.
                let vfs = pf.virtfns.isEmpty ? (try? SysfsEnumerator(root: sysfsRoot).function(at: pf.address))?.virtfns ?? [:] : pf.virtfns
                reports.append(PFApplyReport(pf: pf.address, rule: nil, outcomes: [], vfAddresses: vfs, commands: 0, peakInFlight: 0, elapsed: .zero))
                continue
            }
            reports.append(await run(pf.address, rule: rule, progress: progress))
        }
        return reports
    }

    func run(_ pf: PCIAddress, rule: PFRule, progress: (@Sendable (PCIAddress, Int, Int) -> Void)?) async -> PFApplyReport {
        let clock = groupOptions.clock
        let start = clock.nowNanoseconds
        var report = PFApplyReport(pf: pf, rule: rule.match.description, outcomes: [], vfAddresses: [:], commands: 0, peakInFlight: 0, elapsed: .zero)
        let group: AdminGroup
        do { group = try await AdminGroup.open(opener: opener(pf), registry: registry(), options: groupOptions) } catch {
            report.error = error.description
            report.elapsed = clock.elapsed(since: start)
            return report
        }
        report.vfAddresses = group.vfAddresses
        let requests = policy.requests(for: group.vfAddresses, under: rule)
        let before = group.driver.statistics.submitted
        var perVF: (@Sendable (Int, Int) -> Void)?
        if let progress { perVF = { done, all in progress(pf, done, all) } }
        let provisioner = Provisioner(driver: group.driver, memberType: group.memberType)
        report.outcomes = await provisioner.apply(requests, maxInFlight: maxInFlight, planOnly: planOnly, progress: perVF)
        let statistics = group.driver.statistics
        report.commands = statistics.submitted - before
        report.peakInFlight = statistics.peakInFlight
        // One save of the model's state, after the closing reset (not one before it as well).
        do { try group.closeKeepingState() } catch { report.error = error.description }
        report.elapsed = clock.elapsed(since: start)
        return report
    }
}
