import PCIConfig
import VirtioSpec
import VirtioTransport
import Virtqueue

/// Errors of the admin-queue driver. `description` is one sentence starting with the device.
public enum AdminError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The device does not offer VIRTIO_F_ADMIN_VQ; it was left reset.
    case adminVQNotOffered(device: PCIAddress)
    /// ADMIN_VQ was negotiated but the device reports no admin queue (admin_queue_num 0,
    /// or a common structure too short to carry the field); it was left reset.
    case noAdminQueue(device: PCIAddress, reason: String)
    /// The device refused a command.
    case commandFailed(device: PCIAddress, opcode: AdminOpcode, opcodeName: String, member: GroupMemberID,
                       status: AdminStatus, qualifier: AdminStatusQualifier)
    /// The command did not complete in time (the device still owns its buffers).
    case timeout(device: PCIAddress, opcode: AdminOpcode, opcodeName: String, member: GroupMemberID, after: Duration)
    /// No command slot became free in time: the device holds every slot's buffers.
    case noFreeSlot(device: PCIAddress, opcode: AdminOpcode, opcodeName: String, after: Duration)
    /// The caller's task was cancelled.
    case cancelled(device: PCIAddress, opcode: AdminOpcode, opcodeName: String)
    /// The device set DEVICE_NEEDS_RESET; every command in flight failed with this.
    case deviceNeedsReset(device: PCIAddress)
    /// The device stopped responding (reads return all ones); every command in flight failed.
    case deviceRemoved(device: PCIAddress)
    /// The device broke the virtqueue protocol; every command in flight failed.
    case deviceMisbehaved(device: PCIAddress, VirtqueueError)
    /// The opcode is not in the command set negotiated with LIST_QUERY/LIST_USE.
    case commandNotInUse(device: PCIAddress, opcode: AdminOpcode, opcodeName: String, supported: Bool)
    /// A command's data or result is larger than the driver sends
    /// (``AdminQueueDriver/Options/largeCommandBytes``); nothing was sent.
    case commandTooLarge(device: PCIAddress, opcode: AdminOpcode, opcodeName: String, dataBytes: Int, resultBytes: Int, dataLimit: Int, resultLimit: Int)
    /// The device returned fewer result bytes than the command's result needs.
    case resultTooShort(device: PCIAddress, opcode: AdminOpcode, opcodeName: String, expected: Int, received: Int)
    /// The driver was closed or failed; reinitialise it.
    case notRunning(device: PCIAddress)
    /// Bus Master Enable was cleared when the device did not finish a reset, and could not
    /// be set again to bring the queue back up.
    case busMasterOff(device: PCIAddress)
    /// A run-time plugin's host refused to send the command, or could not complete it (plugin ABI 2).
    case hostRefused(device: PCIAddress, opcode: AdminOpcode, opcodeName: String, reason: String)
    /// A group type's command set could not be negotiated (for the SR-IOV group: VF Enable
    /// is clear, so the group does not exist yet).
    case groupUnavailable(device: PCIAddress, group: AdminGroupType, reason: String)
    /// DMA addresses are IOVAs (VFIO) but the device does not offer VIRTIO_F_ACCESS_PLATFORM,
    /// so it would use them as physical addresses; it was left reset.
    case accessPlatformNotOffered(device: PCIAddress)
    /// The device did not confirm its reset and bus mastering could not be cleared: the
    /// rings and command buffers are kept (quarantined), never released.
    case memoryQuarantined(device: PCIAddress, bytes: Int, reason: String)
    case transport(TransportError)
    /// DMA memory for `purpose` could not be had: the admin queue was not brought up (the
    /// device was left reset), or the command was not sent.
    case dma(device: PCIAddress, purpose: DMAPurpose, DMAError)

    /// One sentence naming the device (or file) and what was expected and found.
    public var description: String {
        switch self {
        case let .adminVQNotOffered(device):
            "\(device): the device does not offer VIRTIO_F_ADMIN_VQ, so it has no admin virtqueue; it was left reset."
        case let .noAdminQueue(device, reason):
            "\(device): VIRTIO_F_ADMIN_VQ is offered but \(reason); the device was left reset."
        case let .commandFailed(device, opcode, name, member, status, qualifier):
            "\(device): \(name) (opcode \(hex(opcode.rawValue, width: 4)))\(member == .none ? "" : " for \(memberText(member))") failed: \(status.name) (\(status.meaning)), qualifier \(qualifier.name)."
        case let .timeout(device, opcode, name, member, after):
            "\(device): \(name) (opcode \(hex(opcode.rawValue, width: 4)))\(member == .none ? "" : " for \(memberText(member))") did not complete within \(after)."
        case let .noFreeSlot(device, opcode, name, after):
            "\(device): \(name) (opcode \(hex(opcode.rawValue, width: 4))) found no free command slot within \(after): the device holds every slot's buffers."
        case let .cancelled(device, _, name):
            "\(device): \(name) was cancelled before it completed."
        case let .deviceNeedsReset(device):
            "\(device): the device set DEVICE_NEEDS_RESET; commands in flight failed and the admin queue must be reinitialised."
        case let .deviceRemoved(device):
            "\(device): the device stopped responding (registers read all ones); commands in flight failed."
        case let .deviceMisbehaved(device, error):
            "\(device): the device broke the virtqueue protocol: \(error)"
        case let .commandNotInUse(device, opcode, name, supported):
            supported
                ? "\(device): \(name) (opcode \(hex(opcode.rawValue, width: 4))) is supported but was not enabled with LIST_USE."
                : "\(device): the device does not list \(name) (opcode \(hex(opcode.rawValue, width: 4))) in LIST_QUERY."
        case let .commandTooLarge(device, opcode, name, dataBytes, resultBytes, dataLimit, resultLimit):
            "\(device): \(name) (opcode \(hex(opcode.rawValue, width: 4))) was not sent: it has \(dataBytes) data and \(resultBytes) result bytes, and the driver sends at most \(dataLimit) data and \(resultLimit) result bytes (Options.largeCommandBytes)."
        case let .resultTooShort(device, _, name, expected, received):
            "\(device): \(name) returned \(received) result bytes; \(expected) expected."
        case let .notRunning(device):
            "\(device): the admin queue is not running (it failed or was closed); reinitialise it."
        case let .busMasterOff(device):
            "\(device): Bus Master Enable was cleared when the device did not finish a reset, and nothing could set it again, so the admin queue cannot be brought up (re-open the PF)."
        case let .hostRefused(_, _, _, reason): reason
        case let .groupUnavailable(device, group, reason):
            group == .srIOV
                ? "\(device): the SR-IOV group's commands are unavailable until VFs are enabled (VF Enable is clear; \(reason))."
                : "\(device): the \(group) group's commands are unavailable: \(reason)."
        case let .accessPlatformNotOffered(device):
            "\(device): the device does not offer VIRTIO_F_ACCESS_PLATFORM, so it would take the driver's IOVAs for physical addresses; refused and left reset (enable the device's IOMMU support, e.g. QEMU iommu_platform=on)."
        case let .memoryQuarantined(device, bytes, reason):
            "\(device): the device did not confirm its reset (\(reason)) and bus mastering could not be cleared, so \(bytes) bytes of DMA memory it may still write are kept, never released."
        case .transport(let error): error.description
        case let .dma(device, purpose, error):
            switch purpose {
            case let .adminQueue(queueSize):
                "\(device): the admin queue was not brought up: DMA memory for its rings and command slots (queue size \(queueSize)) could not be had (\(error.sentence)); the device was left reset."
            case let .command(opcode, name, bytes):
                "\(device): \(name) (opcode \(hex(opcode.rawValue, width: 4))) was not sent: it is larger than a command slot and its \(bytes) bytes of DMA memory could not be had (\(error.sentence))."
            }
        }
    }

    /// The device answered EINVAL / INVALID_GROUP.
    public var isInvalidGroup: Bool {
        if let (status, qualifier) = deviceStatus { return status == .einval && qualifier == .invalidGroup }
        return false
    }

    /// For `commandFailed`: the device's status and qualifier.
    public var deviceStatus: (AdminStatus, AdminStatusQualifier)? {
        if case let .commandFailed(_, _, _, _, status, qualifier) = self { return (status, qualifier) }
        return nil
    }
}

/// What DMA memory that could not be had was for (``AdminError/dma(device:purpose:_:)``).
public enum DMAPurpose: Hashable, Sendable {
    /// The admin queue's rings and command slots, at bring-up.
    case adminQueue(queueSize: Int)
    /// A command larger than a command slot, which gets memory of its own: `bytes` of it.
    case command(opcode: AdminOpcode, opcodeName: String, bytes: Int)
}

extension DMAError {
    /// The description without its final full stop, to sit inside another sentence.
    var sentence: String {
        let text = description
        return text.hasSuffix(".") ? String(text.dropLast()) : text
    }
}

func memberText(_ member: GroupMemberID) -> String {
    member.vfIndex.map { "VF \($0) (member \(member.rawValue))" } ?? "member \(member.rawValue)"
}
