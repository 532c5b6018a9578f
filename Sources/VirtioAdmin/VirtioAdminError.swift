import PCIConfig
import VirtioAdminDriver
import VirtioLinux
import VirtioSimulator
import VirtioSystem

/// Why a PF could not be opened, provisioned or served. Each case reads as one sentence
/// naming the device and what was expected.
public enum VirtioAdminError: Error, Sendable, CustomStringConvertible {
    /// Another process owns the PF's admin queue (its lock file is held).
    case pfBusy(pf: PCIAddress, lockPath: String, waited: Duration)
    /// A system call failed (a lock file, the service's socket, the model's files).
    case system(SystemCallError)
    /// Opening the admin queue resets the PF, and some of its VFs have drivers.
    case vfsInUse(pf: PCIAddress, busy: [String])
    /// The PF is not where the sysfs view says functions are.
    case notInSysfs(pf: PCIAddress, root: String, LinuxError)
    /// The sysfs view itself could not be read.
    case sysfsView(root: String, LinuxError)
    case notAPF(address: PCIAddress)
    case vfNotPF(address: PCIAddress, pf: PCIAddress?)
    case access(pf: PCIAddress, DeviceAccessError)
    case simulatedState(SimulatedStateError)
    case wrongSimulatedPF(path: String, simulates: PCIAddress, asked: PCIAddress)
    case admin(AdminError)
    case transport(pf: PCIAddress, String)
    case closed(pf: PCIAddress)
    case notAVF(address: PCIAddress, pf: PCIAddress)

    /// One sentence naming the device (or file) and what was expected and found.
    public var description: String {
        switch self {
        case let .pfBusy(pf, lockPath, waited):
            "PF \(pf)'s admin queue is owned by another process (\(lockPath) is locked; waited \(waited)); stop it or hand the work to 'virtio-admin serve'."
        case .system(let error): "\(error)."
        case let .vfsInUse(pf, busy):
            "PF \(pf) has VFs in use (\(busy.joined(separator: ", "))); opening its admin queue would reset the PF. Run 'virtio-admin serve', which keeps the queue open."
        case let .notInSysfs(pf, root, error): "PF \(pf) is not in the sysfs view under \(root): \(error)"
        case let .sysfsView(root, error): "cannot read the sysfs view under \(root): \(error)"
        case let .notAPF(address): "\(address) is not an SR-IOV PF (it has no SR-IOV capability)."
        case let .vfNotPF(address, pf): "\(address) is a VF\(pf.map { " of \($0)" } ?? ""), not a PF; name its PF."
        case let .access(pf, error): "cannot reach PF \(pf): \(error)"
        case .simulatedState(let error): error.description
        case let .wrongSimulatedPF(path, simulates, asked): "\(path) simulates PF \(simulates); \(asked) is not in it."
        case .admin(let error): error.description
        case let .transport(_, text): text
        case let .closed(pf): "the admin queue of PF \(pf) is closed."
        case let .notAVF(address, pf): "\(address) is not a VF of \(pf)."
        }
    }
}
