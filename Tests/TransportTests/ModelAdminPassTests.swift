import Testing
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import Virtqueue

/// The device model's admin path driven by hand on the PF's admin queue: commands and
/// results split over several descriptors, several commands in one pass, and the counters.
/// Byte values are the fact sheet's (ratified-admin-commands.md §2.0/§2.1 layouts, §3
/// statuses), written out literally.
struct ModelAdminPassTests {
    /// The PF's admin queue, set up as a driver would (features, queue, DRIVER_OK).
    struct AdminQueue {
        let device: SimulatedSRIOVDevice
        let queue: SplitVirtqueue
        let notifier: QueueNotifier
        let buffers: DMARegion

        init() throws {
            device = SimulatedSRIOVDevice()
            let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
            _ = try transport.negotiate(required: [.version1, .adminVQ], wanted: [.accessPlatform])
            let admin = try #require(transport.adminQueues)
            queue = try SplitVirtqueue(size: 16, allocator: device.memory, eventIndex: false)
            notifier = try transport.setUpQueue(admin.index, size: 16, descriptorArea: queue.descriptorArea, driverArea: queue.driverArea,
                                                deviceArea: queue.deviceArea, checkIndex: false)
            try transport.driverOK()
            buffers = try device.memory.allocate(length: 64 * 1024, alignment: 4096)
        }

        func put(_ bytes: [UInt8], at offset: Int) {
            for (index, byte) in bytes.enumerated() { buffers.bytes[offset + index] = byte }
        }
        func bytes(at offset: Int, count: Int) -> [UInt8] { Array(buffers.bytes[offset..<(offset + count)]) }
        /// Pieces (offset, length) of the buffer region as descriptors.
        func descriptors(_ pieces: [(Int, Int)]) -> [DMABuffer] {
            pieces.map { DMABuffer(address: buffers.deviceAddress(at: $0.0), length: UInt32($0.1)) }
        }
        /// Publishes what was added, notifies once, and returns the used elements (head, length).
        func run() throws -> [(head: UInt16, length: UInt32)] {
            if queue.publish() { notifier.notify() }
            var used: [(head: UInt16, length: UInt32)] = []
            _ = try queue.takeCompletions { used.append(($0.head, $0.length)) }
            return used
        }
    }

    /// opcode le16, group_type le16, reserved[12], group_member_id le64.
    static func header(opcode: UInt16, group: UInt16, member: UInt64) -> [UInt8] {
        [UInt8(opcode & 0xff), UInt8(opcode >> 8), UInt8(group & 0xff), UInt8(group >> 8)] + [UInt8](repeating: 0, count: 12)
            + (0..<8).map { UInt8(truncatingIfNeeded: member >> (8 * $0)) }
    }

    @Test func commandsAndResultsSplitOverDescriptorsInOnePass() throws {
        let admin = try AdminQueue()
        defer { admin.device.stop() }
        // LIST_USE (0x1), SR-IOV group (1): bits 0, 1 and 0x40 (MSIX_GET) = le64 words 0x3, 0x1.
        // The readable part comes as 16 + 24 bytes, the writable one as 8.
        admin.put(Self.header(opcode: 0x1, group: 1, member: 0) + [3, 0, 0, 0, 0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0], at: 0)
        admin.put([UInt8](repeating: 0xee, count: 8), at: 1024)
        let listUse = try admin.queue.add(readable: admin.descriptors([(0, 16), (16, 24)]), writable: admin.descriptors([(1024, 8)]))
        let first = try admin.run()
        #expect(first.count == 1 && first[0].head == listUse && first[0].length == 8)
        #expect(admin.bytes(at: 1024, count: 8) == [0, 0, 0, 0, 0, 0, 0, 0], "status OK, qualifier OK, reserved 0")

        // Two MSIX_GETs (0x40) in one pass, for members 1 and 2: the header read from pieces of
        // 10 + 14 bytes, the result header written across 3 + 5 bytes, the result (vectors
        // le16, maximum le16, 4 reserved) into a 16-byte third buffer of which it fills 8.
        var heads: [UInt16] = []
        for (slot, member) in [(0, UInt64(1)), (1, UInt64(2))] {
            let command = 4096 + slot * 256
            let result = 8192 + slot * 256
            admin.put(Self.header(opcode: 0x40, group: 1, member: member), at: command)
            admin.put([UInt8](repeating: 0xee, count: 96), at: result)
            heads.append(try admin.queue.add(readable: admin.descriptors([(command, 10), (command + 10, 14)]),
                                             writable: admin.descriptors([(result, 3), (result + 32, 5), (result + 64, 16)])))
        }
        let second = try admin.run()
        #expect(second.map(\.head) == heads && second.map(\.length) == [16, 16], "used length: 8 header + 8 result bytes")
        for slot in 0..<2 {
            let result = 8192 + slot * 256
            #expect(admin.bytes(at: result, count: 4) == [0, 0, 0, 0xee], "status bytes 0..<3 in the first buffer")
            #expect(admin.bytes(at: result + 32, count: 6) == [0, 0, 0, 0, 0, 0xee], "qualifier high byte and reserved in the second")
            #expect(admin.bytes(at: result + 64, count: 16) == [0x02, 0x00, 0x20, 0x00, 0, 0, 0, 0] + [UInt8](repeating: 0xee, count: 8),
                    "2 vectors, maximum 32; nothing past the result")
        }
        let counters = admin.device.counters
        #expect(counters.adminCommands == 3 && counters.adminErrors == 0)
        #expect(counters.adminCommandsByOpcode == [0x1: 1, 0x40: 2])
    }

    @Test func countersByOpcodeSurviveResetAndRestore() throws {
        let admin = try AdminQueue()
        defer { admin.device.stop() }
        func send(_ opcode: UInt16) throws -> [UInt8] {
            admin.put(Self.header(opcode: opcode, group: 1, member: 1), at: 0)
            _ = try admin.queue.add(readable: admin.descriptors([(0, 24)]), writable: admin.descriptors([(1024, 16)]))
            #expect(try admin.run().count == 1)
            return admin.bytes(at: 1024, count: 4)
        }
        // An opcode the device does not list, above every opcode it knows: EINVAL (22) / Q_INVALID_OPCODE (2), counted.
        #expect(try send(0x1234) == [22, 0, 2, 0])
        #expect(try send(0x0) == [0, 0, 0, 0])
        #expect(admin.device.counters.adminCommandsByOpcode == [0x1234: 1, 0x0: 1])
        #expect(admin.device.counters.adminErrors == 1)
        admin.device.resetCounters()
        #expect(admin.device.counters == SimulatedCounters())
        var carried = SimulatedCounters()
        carried.adminCommands = 7
        carried.adminCommandsByOpcode = [0x0: 5, 0x1234: 2]
        admin.device.restoreCounters(carried)
        #expect(admin.device.counters == carried)
        _ = try send(0x0)
        _ = try send(0x1234)
        #expect(admin.device.counters.adminCommands == 9)
        #expect(admin.device.counters.adminCommandsByOpcode == [0x0: 6, 0x1234: 3])
    }

    @Test func everyFaultIsSetAndClearedOnItsOwn() {
        let device = SimulatedSRIOVDevice()
        defer { device.stop() }
        for fault in SimulatedFault.allCases {
            device.setFault(fault)
            #expect(device.faults == [fault])
            device.setFault(fault, false)
            #expect(device.faults.isEmpty)
        }
        for fault in SimulatedFault.allCases { device.setFault(fault) }
        #expect(device.faults == Set(SimulatedFault.allCases))
    }
}
