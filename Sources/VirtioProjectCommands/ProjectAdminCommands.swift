import VirtioSpec

/// Admin commands this project defines for the resource managers of the device-management
/// series proposed on virtio-comment (MSI-X
/// vectors and feature bits of a group member), plus an example vendor command (VF MAC).
///
/// **Project-defined, not ratified.** That series ("Introduce device group and device
/// management", v5, 2022) proposed member MSI-X and feature-bit configuration, but those
/// commands were never merged and their opcodes are not in the stored material. They are
/// defined here inside the ratified framework — same command header, status codes and
/// qualifiers, discovered through LIST_QUERY/LIST_USE — at opcodes 0x40–0x51, a range of
/// "future commands of this form" (0x13–0x7fff) that the ratified spec does not use. The
/// numbers are data: ``ProjectOpcodeTable`` lets a device maker remap them, and the
/// device model and the plugins both read the same table.
package struct ProjectOpcodeTable: Hashable, Sendable {
    package var msixGet: AdminOpcode
    package var msixSet: AdminOpcode
    package var msixPoolGet: AdminOpcode
    package var featuresGet: AdminOpcode
    package var featuresSet: AdminOpcode
    package var featuresCapsGet: AdminOpcode
    package var macGet: AdminOpcode
    package var macSet: AdminOpcode

    package init(msixGet: AdminOpcode, msixSet: AdminOpcode, msixPoolGet: AdminOpcode, featuresGet: AdminOpcode,
                featuresSet: AdminOpcode, featuresCapsGet: AdminOpcode, macGet: AdminOpcode, macSet: AdminOpcode) {
        self.msixGet = msixGet
        self.msixSet = msixSet
        self.msixPoolGet = msixPoolGet
        self.featuresGet = featuresGet
        self.featuresSet = featuresSet
        self.featuresCapsGet = featuresCapsGet
        self.macGet = macGet
        self.macSet = macSet
    }

    /// The project's default numbers.
    package static let `default` = ProjectOpcodeTable(
        msixGet: AdminOpcode(0x40), msixSet: AdminOpcode(0x41), msixPoolGet: AdminOpcode(0x42),
        featuresGet: AdminOpcode(0x48), featuresSet: AdminOpcode(0x49), featuresCapsGet: AdminOpcode(0x4a),
        macGet: AdminOpcode(0x50), macSet: AdminOpcode(0x51))

    /// Names of the project-defined opcodes (for `commands` and `--trace`).
    package var names: [AdminOpcode: String] {
        [msixGet: "MSIX_GET", msixSet: "MSIX_SET", msixPoolGet: "MSIX_POOL_GET", featuresGet: "FEATURES_GET",
         featuresSet: "FEATURES_SET", featuresCapsGet: "FEATURES_CAPS_GET", macGet: "MAC_GET", macSet: "MAC_SET"]
    }
}

/// Byte layouts of the project-defined commands (command-specific data after the 24-byte
/// header; command-specific result after the 8-byte status header). All little-endian.
package enum ProjectCommandLayout {
    /// MSIX_GET (member = VF): result `vectors` le16 @0, `max_vectors` le16 @2, reserved le32 @4.
    package static let msixGetResultSize = 8
    package static let msixGetVectors = 0
    package static let msixGetMaximum = 2
    /// MSIX_SET (member = VF): data `vectors` le16 @0, reserved[6]. No result.
    package static let msixSetDataSize = 8
    package static let msixSetVectors = 0
    /// MSIX_POOL_GET (member 0 = the owner): result `total` le32 @0, `available` le32 @4,
    /// `per_member_max` le16 @8, `per_member_min` le16 @10, reserved le32 @12.
    package static let msixPoolResultSize = 16
    package static let msixPoolTotal = 0
    package static let msixPoolAvailable = 4
    package static let msixPoolPerMemberMax = 8
    package static let msixPoolPerMemberMin = 10
    /// FEATURES_GET / FEATURES_CAPS_GET (member = VF): result two le64 words (bits 0–63, 64–127).
    package static let featuresResultSize = 16
    /// FEATURES_SET (member = VF): data two le64 words. No result.
    package static let featuresDataSize = 16
    /// MAC_GET result / MAC_SET data: `mac[6]` @0, reserved[2].
    package static let macSize = 8
}
