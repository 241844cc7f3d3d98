/// Driver id → slot, as an open-addressing hash table with linear probing.
///
/// Why not `Dictionary`: a location update is one lookup in this table, and the whole point of the index
/// is that an update costs little more than storing the point. The standard dictionary hashes with a
/// seeded SipHash, which is built to resist hash flooding by untrusted keys; driver ids are numbers the
/// matching service hands out itself, so a multiplicative (Fibonacci) hash is safe here and several
/// times cheaper. Deletion shifts the following entries back, so there are no tombstones and probe
/// chains stay short however many drivers come and go.
struct SlotTable: Sendable {
    private var keys: [UInt64]
    private var values: [Int32]
    private var mask: Int
    private var shift: UInt64
    private(set) var count = 0

    private static let empty = UInt64.max

    init(capacity: Int = 16) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = Array(repeating: Self.empty, count: size)
        values = Array(repeating: -1, count: size)
        mask = size - 1
        shift = UInt64(64 - size.trailingZeroBitCount)
    }

    @inline(__always)
    private func home(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    @inline(__always)
    func slot(of key: UInt64) -> Int32? {
        var i = home(key)
        return keys.withUnsafeBufferPointer { keys in
            while true {
                let k = keys[i]
                if k == key { return values[i] }
                if k == Self.empty { return nil }
                i = (i + 1) & mask
            }
        }
    }

    /// Inserts or replaces. `UInt64.max` is reserved as the empty marker.
    mutating func set(_ key: UInt64, _ value: Int32) {
        precondition(key != Self.empty, "driver id UInt64.max is reserved")
        if (count + 1) * 2 > keys.count { grow() }
        var i = home(key)
        while true {
            if keys[i] == key { values[i] = value; return }
            if keys[i] == Self.empty {
                keys[i] = key
                values[i] = value
                count += 1
                return
            }
            i = (i + 1) & mask
        }
    }

    mutating func remove(_ key: UInt64) {
        var i = home(key)
        while keys[i] != key {
            if keys[i] == Self.empty { return }
            i = (i + 1) & mask
        }
        // Backward-shift deletion: move later members of the probe chain into the hole when their home
        // position allows it.
        var hole = i
        var j = i
        while true {
            j = (j + 1) & mask
            let k = keys[j]
            if k == Self.empty { break }
            let h = home(k)
            let inRange = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j)
            if !inRange {
                keys[hole] = k
                values[hole] = values[j]
                hole = j
            }
        }
        keys[hole] = Self.empty
        values[hole] = -1
        count -= 1
    }

    private mutating func grow() {
        let oldKeys = keys
        let oldValues = values
        self = SlotTable(capacity: oldKeys.count)
        for (k, v) in zip(oldKeys, oldValues) where k != Self.empty { set(k, v) }
    }
}
