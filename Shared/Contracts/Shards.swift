import Foundation

/// How a service that keeps its own data (a SQLite file) is split into shards: how many each has, which
/// shard an entity lives on, and the ids that say so.
///
/// - An id made by shard `k` of a service with more than one shard starts with `s<k>-`
///   (`s2-8f3a…`): a call about it goes straight to its owner, with no directory to ask. An id without
///   the prefix was made before the service was split, by the one instance it had then: shard 0.
/// - A new entity goes to the shard of a key its caller names (an order to its rider's): rendezvous
///   hashing over the shard count, so that adding a shard moves only the keys the new shard wins (a
///   `1/(n+1)` share), each from the shard it was on, and nothing else.
public struct ShardMap: Sendable, Hashable, CustomStringConvertible {
    /// Shards by service; a service not named has one.
    public private(set) var counts: [String: Int]

    public init(_ counts: [String: Int] = [:]) {
        self.counts = counts.filter { $0.value > 1 }
    }

    /// `order=3,coupon=2` (spaces allowed, empty for none); a part that is not `name=N` with N from 1 to
    /// 64 is refused with the reason.
    public init(parsing text: String) throws(ShardMapError) {
        var counts: [String: Int] = [:]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, !pair[0].isEmpty, let count = Int(pair[1]), (1...Shards.maxCount).contains(count) else {
                throw ShardMapError(description: "shards: \(part) is not NAME=N with N from 1 to \(Shards.maxCount)")
            }
            guard counts[pair[0]] == nil else { throw ShardMapError(description: "shards: \(pair[0]) is named twice") }
            counts[pair[0]] = count
        }
        self.init(counts)
    }

    /// The shards of `service` (1 when it is not split).
    public func count(of service: String) -> Int { counts[service] ?? 1 }

    /// Whether `service` is split into more than one shard.
    public func isSharded(_ service: String) -> Bool { count(of: service) > 1 }

    /// `order=3,coupon=2`, names sorted.
    public var description: String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }
}

/// A shard map that cannot be used.
public struct ShardMapError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

public enum Shards {
    /// The most shards a service may have.
    public static let maxCount = 64

    /// `id` as shard `shard` of a service with `count` shards makes it: `s<shard>-<id>`, or `id` itself
    /// when the service is not split (so an unsplit deployment's ids stay as they were).
    public static func id(_ id: String, shard: Int, of count: Int) -> String {
        count > 1 ? "s\(shard)-\(id)" : id
    }

    /// The shard an id names: its `s<k>-` prefix, or 0 when it has none (made before the split). Nil when
    /// the prefix names a shard the service does not have (`count` or more): no such entity exists.
    public static func shard(ofID id: some StringProtocol, count: Int) -> Int? {
        let utf8 = id.utf8
        guard utf8.first == UInt8(ascii: "s") else { return 0 }
        var value = 0
        var digits = 0
        var index = utf8.index(after: utf8.startIndex)
        while index != utf8.endIndex, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(utf8[index]) {
            value = value * 10 + Int(utf8[index] - UInt8(ascii: "0"))
            digits += 1
            guard digits <= 2 else { return 0 }
            index = utf8.index(after: index)
        }
        // Not `s<digits>-`: an id of another shape (a text id that happens to start with s) is shard 0's.
        guard digits > 0, index != utf8.endIndex, utf8[index] == UInt8(ascii: "-") else { return 0 }
        return value < max(1, count) ? value : nil
    }

    /// The shard that owns `key` among `count`: the shard with the highest score of `key` and its number
    /// (rendezvous hashing, FNV-1a then a 64-bit mix; the same on every machine and in every process,
    /// unlike Swift's seeded `Hasher`).
    public static func shard(forKey key: some StringProtocol, count: Int) -> Int {
        guard count > 1 else { return 0 }
        var base: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            base ^= UInt64(byte)
            base &*= 0x0000_0100_0000_01b3
        }
        var best = 0
        var bestScore: UInt64 = 0
        for shard in 0..<count {
            let score = mix(base ^ (UInt64(shard) &+ 1) &* 0x9e37_79b9_7f4a_7c15)
            if shard == 0 || score > bestScore {
                best = shard
                bestScore = score
            }
        }
        return best
    }

    /// SplitMix64's finaliser: every bit of the input reaches every bit of the output.
    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// The shard an instance owns, of its service's `count`.
public struct Shard: Sendable, Hashable {
    public let index: Int
    public let count: Int

    public init(index: Int, of count: Int) {
        self.count = max(1, count)
        self.index = min(max(0, index), self.count - 1)
    }

    /// Whether the service is split at all.
    public var isSplit: Bool { count > 1 }

    /// A new id made here: `s<index>-<id>` when the service is split.
    public func id(_ id: String) -> String { Shards.id(id, shard: index, of: count) }

    /// Whether the entity `id` names lives on this shard.
    public func owns(id: some StringProtocol) -> Bool { Shards.shard(ofID: id, count: count) == index }

    /// A consumer group of this shard: `name` itself when the service is not split (as before), else
    /// `name-s<index>`, so each shard reads a stream for its own entities.
    public func group(_ name: String) -> String { named(name) }

    /// A stream (or any name) of this shard's own, which no other shard reads: `name` itself when the
    /// service is not split, else `name-s<index>`.
    public func named(_ name: String) -> String { isSplit ? "\(name)-s\(index)" : name }
}
