import VirtioSpec

// Small fixed-layout sets and tallies for the model's per-command state: a bit per head, a
// bit per fault, a slot per opcode. They replace `Set`/`Dictionary` on the admin path, where
// hashing cost more than the command itself (issue 16).

/// Descriptor heads in service on one queue: a bitmap indexed by head, and its population.
struct HeadSet {
    private var words: [UInt64] = []
    /// Number of heads in the set.
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    func contains(_ head: UInt16) -> Bool {
        let word = Int(head) >> 6
        return word < words.count && words[word] & (1 << UInt64(head & 63)) != 0
    }

    /// Adds `head`; returns whether it was absent.
    @discardableResult
    mutating func insert(_ head: UInt16) -> Bool {
        let word = Int(head) >> 6
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: word - words.count + 1)) }
        let bit: UInt64 = 1 << UInt64(head & 63)
        guard words[word] & bit == 0 else { return false }
        words[word] |= bit
        count += 1
        return true
    }

    /// Removes `head`; returns it when it was in the set (as `Set.remove`).
    @discardableResult
    mutating func remove(_ head: UInt16) -> UInt16? {
        let word = Int(head) >> 6
        let bit: UInt64 = 1 << UInt64(head & 63)
        guard word < words.count, words[word] & bit != 0 else { return nil }
        words[word] &= ~bit
        count -= 1
        return head
    }

    mutating func removeAll() {
        guard count > 0 else { return }
        for index in words.indices { words[index] = 0 }
        count = 0
    }

    /// The heads, ascending.
    func sorted() -> [UInt16] {
        var heads: [UInt16] = []
        heads.reserveCapacity(count)
        for (index, word) in words.enumerated() where word != 0 {
            for bit in 0..<64 where word & (1 << UInt64(bit)) != 0 { heads.append(UInt16(index * 64 + bit)) }
        }
        return heads
    }
}

/// The faults injected into a function: one bit per ``SimulatedFault``.
struct FaultSet {
    private var bits: UInt32 = 0

    @inline(__always)
    func contains(_ fault: SimulatedFault) -> Bool { bits & fault.bit != 0 }
    mutating func insert(_ fault: SimulatedFault) { bits |= fault.bit }
    mutating func remove(_ fault: SimulatedFault) { bits &= ~fault.bit }
    var isEmpty: Bool { bits == 0 }

    /// The faults as the public API shows them.
    var asSet: Set<SimulatedFault> { Set(SimulatedFault.allCases.filter(contains)) }
}

extension SimulatedFault {
    /// This fault's bit in a ``FaultSet``.
    @inline(__always)
    var bit: UInt32 {
        switch self {
        case .neverComplete: 1 << 0
        case .outOfRangeID: 1 << 1
        case .duplicateID: 1 << 2
        case .usedLengthTooLarge: 1 << 3
        case .needsResetMidFlight: 1 << 4
        case .surpriseRemoval: 1 << 5
        case .refuseFeaturesOK: 1 << 6
        case .noAdminQueue: 1 << 7
        case .queueSizeZero: 1 << 8
        case .slowReset: 1 << 9
        case .lateWrite: 1 << 10
        case .transientEAGAIN: 1 << 11
        }
    }
}

/// Admin commands counted by opcode, one slot per opcode below ``directCount`` (the ratified
/// and the project's opcodes); the caller counts larger opcodes in a dictionary.
struct OpcodeTally {
    /// Opcodes below this have a slot.
    static let directCount = 256
    private var slots: [Int] = []

    /// Counts one command with `opcode`; `false` when the opcode has no slot.
    @inline(__always)
    mutating func count(_ opcode: UInt16) -> Bool {
        guard Int(opcode) < Self.directCount else { return false }
        if slots.isEmpty { slots = [Int](repeating: 0, count: Self.directCount) }
        slots[Int(opcode)] += 1
        return true
    }

    /// Adds the counts to `byOpcode`.
    func add(into byOpcode: inout [UInt16: Int]) {
        for (opcode, count) in slots.enumerated() where count > 0 { byOpcode[UInt16(opcode), default: 0] += count }
    }
}
