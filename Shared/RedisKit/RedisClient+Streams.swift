/// One entry of a Redis stream.
public struct StreamEntry: Sendable, Hashable {
    public var id: String
    public var fields: [String: [UInt8]]

    public init(id: String, fields: [String: [UInt8]]) {
        self.id = id
        self.fields = fields
    }

    public func string(_ field: String) -> String? {
        fields[field].map { String(decoding: $0, as: UTF8.self) }
    }

    static func parse(_ value: RESPValue) throws -> StreamEntry? {
        guard let pair = value.array, pair.count == 2, let id = pair[0].string else {
            throw RedisError.unexpectedReply("stream entry is not [id, fields]")
        }
        // XAUTOCLAIM (before Redis 7) and XCLAIM answer nil fields for entries deleted meanwhile.
        guard let flat = pair[1].array else { return nil }
        var fields: [String: [UInt8]] = [:]
        var index = 0
        while index + 1 < flat.count {
            if let name = flat[index].string {
                fields[name] = flat[index + 1].bytes ?? []
            }
            index += 2
        }
        return StreamEntry(id: id, fields: fields)
    }
}

/// One pending entry of a consumer group, from `XPENDING … IDLE`.
public struct PendingEntry: Sendable, Hashable {
    public var id: String
    public var consumer: String
    public var idleMilliseconds: Int
    public var deliveries: Int
}

extension RedisClient {
    /// `XADD stream [MAXLEN ~ n] * field value…`; returns the new entry's id.
    @discardableResult
    public func xadd(
        _ stream: String,
        fields: [(String, any RESPArgumentConvertible)],
        maxLength: Int? = nil
    ) async throws -> String {
        try await Self.xaddReply(try await send(Self.xaddCommand(stream, fields: fields, maxLength: maxLength)))
    }

    public static func xaddCommand(
        _ stream: String,
        fields: [(String, any RESPArgumentConvertible)],
        maxLength: Int? = nil
    ) -> RedisCommand {
        var arguments: [any RESPArgumentConvertible] = [stream]
        if let maxLength { arguments += ["MAXLEN", "~", maxLength] }
        arguments.append("*")
        for (name, value) in fields {
            arguments.append(name)
            arguments.append(value)
        }
        return RedisCommand("XADD", arguments)
    }

    static func xaddReply(_ reply: RESPValue) throws -> String {
        guard let id = reply.string else { throw RedisError.unexpectedReply("XADD returned no id") }
        return id
    }

    /// Creates a consumer group (and the stream with it); an existing group is left as it is.
    public func xgroupCreate(_ stream: String, group: String, startAt id: String = "0") async throws {
        do {
            try await send(RedisCommand("XGROUP", "CREATE", stream, group, id, "MKSTREAM"))
        } catch let error as RedisError where error.serverErrorPrefix == "BUSYGROUP" {
            return
        }
    }

    /// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS s >` on `connection` (blocking reads need their own),
    /// preceded in the same write by `XACK` of `handled` when there are any (an error reply to either throws).
    public static func xreadgroup(
        on connection: RedisConnection,
        stream: String,
        group: String,
        consumer: String,
        count: Int,
        block: Duration?,
        id: String = ">",
        acknowledging handled: [String] = []
    ) async throws -> [StreamEntry] {
        var arguments: [any RESPArgumentConvertible] = ["GROUP", group, consumer, "COUNT", count]
        if let block { arguments += ["BLOCK", max(1, Int(block.milliseconds))] }
        arguments += ["STREAMS", stream, id]
        let read = RedisCommand("XREADGROUP", arguments)
        guard !handled.isEmpty else { return try parseRead(try await connection.send(read, allowance: block ?? .zero)) }
        // The last read's acknowledgement goes in the same write as the next read: one round trip.
        let replies = try await connection.pipeline([RedisCommand("XACK", [stream, group] + handled), read], allowance: block ?? .zero)
        for reply in replies {
            if case .error(let message) = reply { throw RedisError.server(message) }
        }
        return try parseRead(replies[1])
    }

    /// Non-blocking `XREADGROUP` through the pool.
    public func xreadgroup(
        stream: String,
        group: String,
        consumer: String,
        count: Int,
        id: String = ">"
    ) async throws -> [StreamEntry] {
        let arguments: [any RESPArgumentConvertible] = ["GROUP", group, consumer, "COUNT", count, "STREAMS", stream, id]
        return try Self.parseRead(try await send(RedisCommand("XREADGROUP", arguments)))
    }

    static func parseRead(_ reply: RESPValue) throws -> [StreamEntry] {
        if reply.isNull { return [] }
        guard let streams = reply.array else { throw RedisError.unexpectedReply("XREADGROUP reply is not an array") }
        var entries: [StreamEntry] = []
        for stream in streams {
            guard let pair = stream.array, pair.count == 2, let items = pair[1].array else { continue }
            for item in items {
                if let entry = try StreamEntry.parse(item) { entries.append(entry) }
            }
        }
        return entries
    }

    @discardableResult
    public func xack(_ stream: String, group: String, ids: [String]) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        return try await send(RedisCommand("XACK", [stream, group] + ids)).int ?? 0
    }

    /// `XAUTOCLAIM`: takes over entries pending longer than `minIdle` for `consumer`.
    /// Returns the cursor to continue from (`0-0` when the scan is complete) and the claimed entries.
    public func xautoclaim(
        _ stream: String,
        group: String,
        consumer: String,
        minIdle: Duration,
        start: String = "0-0",
        count: Int = 100
    ) async throws -> (next: String, entries: [StreamEntry]) {
        let reply = try await send(RedisCommand(
            "XAUTOCLAIM", stream, group, consumer, Int(minIdle.milliseconds), start, "COUNT", count
        ))
        guard let parts = reply.array, parts.count >= 2, let next = parts[0].string, let items = parts[1].array else {
            throw RedisError.unexpectedReply("XAUTOCLAIM reply has no cursor and entries")
        }
        return (next, try items.compactMap { try StreamEntry.parse($0) })
    }

    /// `XPENDING stream group [IDLE ms] start end count`: who holds which entry, for how long, delivered how often.
    public func xpending(
        _ stream: String,
        group: String,
        minIdle: Duration? = nil,
        start: String = "-",
        end: String = "+",
        count: Int = 100
    ) async throws -> [PendingEntry] {
        var arguments: [any RESPArgumentConvertible] = [stream, group]
        if let minIdle { arguments += ["IDLE", Int(minIdle.milliseconds)] }
        arguments += [start, end, count]
        guard let rows = try await send(RedisCommand("XPENDING", arguments)).array else {
            throw RedisError.unexpectedReply("XPENDING reply is not an array")
        }
        return rows.compactMap { row in
            guard let f = row.array, f.count == 4, let id = f[0].string, let consumer = f[1].string,
                let idle = f[2].int, let deliveries = f[3].int
            else { return nil }
            return PendingEntry(id: id, consumer: consumer, idleMilliseconds: idle, deliveries: deliveries)
        }
    }

    /// `XRANGE stream start end COUNT n`: entries in id order; a start of `(id` excludes `id`.
    public func xrange(_ stream: String, from start: String = "-", to end: String = "+", count: Int) async throws -> [StreamEntry] {
        let reply = try await send(RedisCommand("XRANGE", stream, start, end, "COUNT", count))
        guard let items = reply.array else { throw RedisError.unexpectedReply("XRANGE reply is not an array") }
        return try items.compactMap(StreamEntry.parse)
    }

    public func xlen(_ stream: String) async throws -> Int {
        try await send(RedisCommand("XLEN", stream)).int ?? 0
    }

    /// `XRANGE stream start end [COUNT n]`.
    public func xrange(_ stream: String, start: String = "-", end: String = "+", count: Int? = nil) async throws -> [StreamEntry] {
        var arguments: [any RESPArgumentConvertible] = [stream, start, end]
        if let count { arguments += ["COUNT", count] }
        guard let items = try await send(RedisCommand("XRANGE", arguments)).array else {
            throw RedisError.unexpectedReply("XRANGE reply is not an array")
        }
        return try items.compactMap { try StreamEntry.parse($0) }
    }
}
