import Foundation
import HailKit
import Logging
import Metrics
import RedisKit

/// How much of a stream to keep once every consumer group has read it.
public struct StreamRetention: Sendable {
    /// Entries kept at most (approximately: the cut is estimated from the entries' times).
    public var maxLength: Int
    /// Entries older than this go.
    public var maxAge: Duration

    public init(maxLength: Int = 1_000_000, maxAge: Duration = .seconds(7 * 24 * 3600)) {
        self.maxLength = max(1, maxLength)
        self.maxAge = maxAge
    }
}

/// Keeps streams within their retention without ever dropping an entry a consumer group has not read.
///
/// Every run, per stream: the oldest entry any group still needs is the smallest of each group's oldest
/// pending entry (delivered, not acknowledged) or, when it has none pending, its last delivered id; the
/// stream is trimmed (`XTRIM MINID`) to whichever comes first of that point and the retention's cut: the
/// age cut, and the length cut estimated by assuming entries spread evenly between the first and the
/// last entry's time (entry ids are millisecond times). A group that falls behind holds the stream
/// long; one that is deleted releases it. A stream no group reads is trimmed by retention alone.
/// `hailstorm_stream_length{stream}` and `hailstorm_stream_trimmed_total{stream}` go to `/metrics`.
public struct StreamTrimmer: Sendable {
    let redis: RedisClient
    let streams: [String]
    let retention: StreamRetention
    let logger: Logger

    /// `streams`: stream names (`order`), not keys.
    public init(redis: RedisClient, streams: [String], retention: StreamRetention, logger: Logger) {
        self.redis = redis
        self.streams = streams
        self.retention = retention
        self.logger = logger
    }

    /// The trimmer as periodic work, every `interval`.
    public func periodic(every interval: Duration = .seconds(30)) -> PeriodicWork {
        PeriodicWork("stream-trim", every: interval, logger: logger) { try await trimAll() }
    }

    public func trimAll() async throws {
        for stream in streams {
            try await trim(EventEnvelope.streamKey(stream))
        }
    }

    /// Trims one stream key; returns how many entries went.
    ///
    /// The length cut is placed by time, which is exact only when entries arrive at an even rate; when a
    /// pass leaves the stream longer than its bound (a burst at one end), the cut is placed again on what
    /// is left, at most four passes in all.
    @discardableResult
    public func trim(_ key: String, now: Date = Date()) async throws -> Int {
        var total = 0
        for _ in 0..<4 {
            let pass = try await trimOnce(key, now: now)
            total += pass.trimmed
            guard pass.trimmed > 0, pass.length - pass.trimmed > retention.maxLength else { break }
        }
        return total
    }

    /// One pass: the entries trimmed and the stream's length before.
    private func trimOnce(_ key: String, now: Date) async throws -> (trimmed: Int, length: Int) {
        let info: [RESPValue]
        do {
            info = try await redis.send("XINFO", "STREAM", key).array ?? []
        } catch let error as RedisError where error.message.contains("no such key") {
            return (0, 0)
        }
        let fields = StreamBacklog.fields(of: info)
        guard let length = fields["length"]?.int, length > 0,
            let first = fields["first-entry"]?.array?.first?.string.flatMap(StreamID.init),
            let last = fields["last-entry"]?.array?.first?.string.flatMap(StreamID.init)
        else { return (0, 0) }
        Gauge(label: "hailstorm_stream_length", dimensions: [("stream", key)]).record(length)

        var cut = StreamID(milliseconds: UInt64(max(0, (now.timeIntervalSince1970 - Double(retention.maxAge.components.seconds)) * 1000)), sequence: 0)
        if length > retention.maxLength {
            // Drop the oldest (length - maxLength), placed by time between the first and the last entry.
            let share = Double(length - retention.maxLength) / Double(length)
            let span = Double(last.milliseconds &- first.milliseconds)
            var estimated = StreamID(milliseconds: first.milliseconds + UInt64(span * share), sequence: 0)
            // Entries all in one millisecond (or a cut that would land on the first one): step past it.
            if estimated <= first { estimated = first.next }
            cut = max(cut, estimated)
        }
        if let needed = try await oldestNeeded(key) { cut = min(cut, needed) }
        guard cut > first else { return (0, length) }
        let trimmed = try await redis.send("XTRIM", key, "MINID", cut.description).int ?? 0
        if trimmed > 0 {
            Counter(label: "hailstorm_stream_trimmed_total", dimensions: [("stream", key)]).increment(by: trimmed)
            logger.debug("stream trimmed", metadata: ["stream": "\(key)", "entries": "\(trimmed)", "before": "\(cut)"])
        }
        return (trimmed, length)
    }

    /// The oldest entry some group has not yet finished with; nil when no group reads the stream.
    func oldestNeeded(_ key: String) async throws -> StreamID? {
        let groups: [RESPValue]
        do {
            groups = try await redis.send("XINFO", "GROUPS", key).array ?? []
        } catch let error as RedisError where error.message.contains("no such key") {
            return nil
        }
        var oldest: StreamID? = nil
        for group in groups {
            let fields = StreamBacklog.fields(of: group.array ?? [])
            guard let name = fields["name"]?.string else { continue }
            var needed: StreamID
            if (fields["pending"]?.int ?? 0) > 0,
                let summary = try await redis.send("XPENDING", key, name).array, summary.count >= 2,
                let smallest = summary[1].string.flatMap(StreamID.init)
            {
                needed = smallest
            } else {
                // Everything up to the last delivered id is read; the next entry is the first one needed.
                let delivered = fields["last-delivered-id"]?.string.flatMap(StreamID.init) ?? StreamID(milliseconds: 0, sequence: 0)
                needed = delivered.next
            }
            oldest = oldest.map { min($0, needed) } ?? needed
        }
        return oldest
    }
}

/// A stream entry id: milliseconds and a sequence number.
/// What a consumer group still has to do on a stream.
public enum StreamBacklog {
    /// Whether `group` has read and acknowledged every entry `stream` holds: true for a stream that is
    /// empty or does not exist, false for entries the group was never created to read.
    public static func isDrained(_ stream: String, group: String, redis: RedisClient) async throws -> Bool {
        let key = EventEnvelope.streamKey(stream)
        let info: [RESPValue]
        do {
            info = try await redis.send("XINFO", "STREAM", key).array ?? []
        } catch let error as RedisError where error.message.contains("no such key") {
            return true
        }
        let stream = fields(of: info)
        guard (stream["length"]?.int ?? 0) > 0, let last = stream["last-entry"]?.array?.first?.string.flatMap(StreamID.init) else {
            return true
        }
        let groups = try await redis.send("XINFO", "GROUPS", key).array ?? []
        guard let state = groups.map({ fields(of: $0.array ?? []) }).first(where: { $0["name"]?.string == group }) else { return false }
        guard (state["pending"]?.int ?? 0) == 0, let delivered = state["last-delivered-id"]?.string.flatMap(StreamID.init) else {
            return false
        }
        return delivered >= last
    }

    /// An `XINFO` reply's flat name-value list as a dictionary.
    static func fields(of values: [RESPValue]) -> [String: RESPValue] {
        var fields: [String: RESPValue] = [:]
        for pair in stride(from: 0, to: values.count - 1, by: 2) {
            if let name = values[pair].string { fields[name] = values[pair + 1] }
        }
        return fields
    }
}

struct StreamID: Comparable, CustomStringConvertible, Sendable {
    var milliseconds: UInt64
    var sequence: UInt64

    init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    init?(_ text: String) {
        let parts = text.split(separator: "-", maxSplits: 1)
        guard let ms = parts.first.flatMap({ UInt64($0) }) else { return nil }
        milliseconds = ms
        sequence = parts.count > 1 ? UInt64(parts[1]) ?? 0 : 0
    }

    /// The smallest id after this one.
    var next: StreamID {
        sequence == .max ? StreamID(milliseconds: milliseconds + 1, sequence: 0) : StreamID(milliseconds: milliseconds, sequence: sequence + 1)
    }

    var description: String { "\(milliseconds)-\(sequence)" }

    static func < (a: StreamID, b: StreamID) -> Bool {
        (a.milliseconds, a.sequence) < (b.milliseconds, b.sequence)
    }
}
