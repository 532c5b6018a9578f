import FeatureBitsResourceManager
import MSIXResourceManager
import VirtioAdminDriver
import VirtioSpec

/// What one VF should get in a bulk run.
public struct VFRequest: Sendable, Hashable {
    /// The VF's 0-based index (sysfs `virtfnN`; member id N + 1).
    public var vf: Int
    /// What the VF should get.
    public var desired: DesiredResources
    /// A request for VF `vf`.
    public init(vf: Int, desired: DesiredResources) {
        self.vf = vf
        self.desired = desired
    }
}

/// What a VF holds (read back from the device).
public struct HeldResources: Sendable, Hashable {
    /// The VF's MSI-X vectors, if read.
    public var msixVectors: Int?
    /// The VF's feature bits, if read.
    public var features: FeatureSet?
}

/// The outcome of one VF in a bulk run: the changes made (or, in a plan, needed), and on
/// failure the error and what the VF holds now — a VF that failed part-way is never
/// reported as provisioned.
public struct VFOutcome: Sendable {
    /// The VF's 0-based index.
    public var vf: Int
    /// The changes made (in a plan: needed), in the order they were made.
    public var changes: [ProvisioningChange]
    /// Why the VF failed; `nil` when it succeeded.
    public var error: AdminError?
    /// After a failure: the VF's resources as read back (fields the device would not report are nil).
    public var holding: HeldResources?
    /// Whether the VF holds what was requested.
    public var succeeded: Bool { error == nil }
    /// An outcome of VF `vf`.
    public init(vf: Int, changes: [ProvisioningChange], error: AdminError? = nil, holding: HeldResources? = nil) {
        self.vf = vf
        self.changes = changes
        self.error = error
        self.holding = holding
    }
}

extension Provisioner {
    /// Brings many VFs to what they should have, with their commands in flight on the PF's
    /// admin queue together. Each VF is read first and only what differs is written.
    ///
    /// VFs are worked on `maxInFlight` at a time (1 sends one command after another). By
    /// default, as many as the admin queue holds commands: a VF has one command in flight
    /// at a time, so more VFs than that would only wait for a slot, each holding a task's
    /// memory (1024 VFs at once faulted in 5–6 MB of task memory in a cold process).
    /// The commands go through an ``AdminBatcher``: what the VFs' tasks submit together
    /// reaches the device as one batch (one doorbell, one wait).
    ///
    /// - Parameters:
    ///   - planOnly: read only; the outcomes' changes are what would be made.
    ///   - progress: called after each VF with (VFs done, VFs in all), one call at a time.
    /// - Returns: one outcome per request, in request order.
    public func apply(_ requests: [VFRequest], maxInFlight: Int? = nil, planOnly: Bool = false,
                      progress: (@Sendable (Int, Int) -> Void)? = nil) async -> [VFOutcome] {
        guard !requests.isEmpty else { return [] }
        var outcomes = [VFOutcome?](repeating: nil, count: requests.count)
        let limit = max(1, min(maxInFlight ?? driver.slotCount, requests.count))
        let runner = AdminBatcher(driver: driver)
        await withTaskGroup(of: (Int, VFOutcome).self) { group in
            var next = 0
            func start() {
                let position = next
                let request = requests[position]
                next += 1
                group.addTask { (position, await self.outcome(of: request, planOnly: planOnly, runner: runner)) }
            }
            while next < limit { start() }
            var done = 0
            for await (position, outcome) in group {
                outcomes[position] = outcome
                done += 1
                progress?(done, requests.count)
                if next < requests.count { start() }
            }
        }
        return outcomes.map { $0! }
    }

    /// One VF: read, write what differs; on failure, read back what it holds.
    func outcome(of request: VFRequest, planOnly: Bool, runner: AdminBatcher) async -> VFOutcome {
        var made: [ProvisioningChange] = []
        do {
            let changes = try await plan(vf: request.vf, desired: request.desired, on: runner)
            if planOnly { return VFOutcome(vf: request.vf, changes: changes) }
            for change in changes {
                try await write(change, on: runner)
                made.append(change)
            }
            return VFOutcome(vf: request.vf, changes: made)
        } catch {
            return VFOutcome(vf: request.vf, changes: made, error: error, holding: await held(vf: request.vf))
        }
    }

    /// What the VF holds now, as far as the device answers.
    public func held(vf: Int) async -> HeldResources {
        HeldResources(msixVectors: try? await msix.vectors(of: vf, driver: driver),
                      features: try? await features.features(of: vf, driver: driver))
    }
}
