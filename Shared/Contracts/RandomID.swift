/// Random identifiers: version 4 UUIDs in lowercase text, the ids of orders, claims, events and tokens.
///
/// Foundation's `UUID()` on Linux opens, reads and closes `/dev/urandom` for each one; a flash-sale claim
/// makes three ids (request, claim, event), so that was nine system calls per claim. These come from the
/// system generator (`getrandom`, no file) and are formatted without going through `uuidString`.
public enum RandomID {
    /// A UUID (version 4, RFC 9562 variant) as 36 lowercase characters: `8-4-4-4-12` hex digits.
    public static func uuid() -> String {
        var generator = SystemRandomNumberGenerator()
        var high = generator.next() as UInt64
        var low = generator.next() as UInt64
        high = (high & ~0xF000) | 0x4000  // version 4 in bits 48–51 (byte 6's high nibble)
        low = (low & ~(0xC000_0000_0000_0000 as UInt64)) | 0x8000_0000_0000_0000  // variant 10xx
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var index = 0
            for nibble in 0..<32 {
                if nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20 {
                    buffer[index] = UInt8(ascii: "-")
                    index += 1
                }
                let word = nibble < 16 ? high : low
                let shift = UInt64((15 - nibble % 16) * 4)
                buffer[index] = hexDigits[Int((word >> shift) & 0xF)]
                index += 1
            }
            return index
        }
    }

    /// `count` random lowercase hex digits (request ids, short suffixes).
    public static func hex(_ count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return String(unsafeUninitializedCapacity: count) { buffer in
            var bits: UInt64 = 0
            for i in 0..<count {
                if i % 16 == 0 { bits = generator.next() }
                buffer[i] = hexDigits[Int(bits & 0xF)]
                bits >>= 4
            }
            return count
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
