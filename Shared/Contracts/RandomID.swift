import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Random identifiers in lowercase text: version 4 UUIDs (users, tokens) and time-ordered version 7
/// UUIDs (events, orders, claims, payments: the keys of rows written as they are made).
///
/// Foundation's `UUID()` on Linux opens, reads and closes `/dev/urandom` for each one; a flash-sale claim
/// makes three ids (request, claim, event), so that was nine system calls per claim. These come from the
/// system's generator, 2 KiB per read rather than 8 bytes (the standard library's generator makes one
/// `getrandom` call per word: two per UUID), and are formatted without going through `uuidString`.
public enum RandomID {
    /// A UUID (version 4, RFC 9562 variant) as 36 lowercase characters: `8-4-4-4-12` hex digits.
    public static func uuid() -> String {
        let high = (RandomWords.shared.next() & ~0xF000) | 0x4000  // version 4 in bits 48–51 (byte 6's high nibble)
        return text(high: high, low: RandomWords.shared.next())
    }

    /// A time-ordered UUID (version 7, RFC 9562): the Unix time in milliseconds in its first 48 bits, 74
    /// random bits after. For ids that become keys of an index written as they are made (events: every
    /// consumer records the id of each event it handled; orders, whose history and offers are keyed by
    /// the order first): a random id lands each insert on a random page of the index, and each commit
    /// writes all those pages to the WAL; ids that grow with time go to the index's last pages. They tell
    /// when they were made, to the millisecond, which these rows carry anyway.
    public static func timeOrderedUUID(milliseconds: UInt64? = nil) -> String {
        let milliseconds = milliseconds ?? {
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            return UInt64(now.tv_sec) &* 1000 &+ UInt64(now.tv_nsec / 1_000_000)
        }()
        let high = (milliseconds << 16) | 0x7000 | (RandomWords.shared.next() & 0x0FFF)  // version 7
        return text(high: high, low: RandomWords.shared.next())
    }

    /// `high` and `low` as a UUID's text, with the RFC 9562 variant set in `low`.
    private static func text(high: UInt64, low: UInt64) -> String {
        let low = (low & ~(0xC000_0000_0000_0000 as UInt64)) | 0x8000_0000_0000_0000  // variant 10xx
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
        String(unsafeUninitializedCapacity: count) { buffer in
            var bits: UInt64 = 0
            for i in 0..<count {
                if i % 16 == 0 { bits = RandomWords.shared.next() }
                buffer[i] = hexDigits[Int(bits & 0xF)]
                bits >>= 4
            }
            return count
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}

/// Words from the system's cryptographic generator, fetched 256 at a time from `/dev/urandom` (kept
/// open): one read for what a hundred ids need. The words are as unpredictable as the generator's (they
/// are its output, handed out once each, in order), so push tickets and session families made of them
/// stay unguessable.
final class RandomWords: Sendable {
    static let shared = RandomWords()

    private let state = Mutex<(words: [UInt64], next: Int)>(([], 0))
    /// `/dev/urandom`, or -1 where it cannot be opened (then the standard generator serves every word).
    private let device: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

    func next() -> UInt64 {
        state.withLock { state in
            if state.next == state.words.count {
                state.words = fetch(256)
                state.next = 0
            }
            defer { state.next += 1 }
            return state.words[state.next]
        }
    }

    private func fetch(_ count: Int) -> [UInt64] {
        var words = [UInt64](repeating: 0, count: count)
        words.withUnsafeMutableBytes { raw in
            var filled = 0
            while device >= 0, filled < raw.count {
                let got = read(device, raw.baseAddress! + filled, raw.count - filled)
                if got > 0 {
                    filled += got
                } else if got < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            // Whatever the device did not give, word by word from the standard library's generator.
            if filled < raw.count {
                var generator = SystemRandomNumberGenerator()
                for index in (filled / 8)..<count {
                    raw.storeBytes(of: generator.next() as UInt64, toByteOffset: index * 8, as: UInt64.self)
                }
            }
        }
        return words
    }
}
