/// Everyday commands, typed.
extension RedisClient {
    public func get(_ key: String) async throws -> [UInt8]? {
        let reply = try await send(RedisCommand("GET", key))
        return reply.isNull ? nil : reply.bytes
    }

    public func getString(_ key: String) async throws -> String? {
        try await get(key).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `SET key value [PX ttl] [NX]`; returns false when `NX` kept an existing value.
    @discardableResult
    public func set(
        _ key: String,
        to value: some RESPArgumentConvertible,
        expiresIn ttl: Duration? = nil,
        onlyIfAbsent: Bool = false
    ) async throws -> Bool {
        var arguments: [any RESPArgumentConvertible] = [key, value]
        if let ttl { arguments += ["PX", max(1, Int(ttl.milliseconds))] }
        if onlyIfAbsent { arguments.append("NX") }
        return try await !send(RedisCommand("SET", arguments)).isNull
    }

    @discardableResult
    public func delete(_ keys: String...) async throws -> Int {
        try await send(RedisCommand("DEL", keys)).int ?? 0
    }

    public func exists(_ key: String) async throws -> Bool {
        try await send(RedisCommand("EXISTS", key)).int == 1
    }

    @discardableResult
    public func increment(_ key: String, by amount: Int = 1) async throws -> Int {
        guard let value = try await send(RedisCommand("INCRBY", key, amount)).int else {
            throw RedisError.unexpectedReply("INCRBY returned no integer")
        }
        return value
    }

    @discardableResult
    public func expire(_ key: String, in ttl: Duration) async throws -> Bool {
        try await send(RedisCommand("PEXPIRE", key, max(1, Int(ttl.milliseconds)))).int == 1
    }

    /// `PING`; throws when the server cannot be reached.
    public func ping() async throws {
        _ = try await send(RedisCommand("PING"))
    }

    @discardableResult
    /// Every key matching `pattern` (a `SCAN` pattern), `batch` at a time; in a cluster, from every master
    /// (a `SCAN` cursor belongs to one node). Keys written meanwhile may or may not be listed.
    public func keys(matching pattern: String, batch: Int = 1000) async throws -> [String] {
        let nodes: [RedisNode?] = isCluster ? try await masters().map { $0 } : [nil]
        var found: [String] = []
        for node in nodes {
            var cursor = "0"
            repeat {
                let command = RedisCommand("SCAN", cursor, "MATCH", pattern, "COUNT", batch)
                let reply: RESPValue
                if let node { reply = try await send(command, to: node) } else { reply = try await send(command) }
                guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                    throw RedisError.unexpectedReply("SCAN answered \(reply)")
                }
                cursor = next
                found.append(contentsOf: (parts[1].array ?? []).compactMap(\.string))
            } while cursor != "0"
        }
        return found
    }

    public func publish(_ channel: String, _ message: some RESPArgumentConvertible) async throws -> Int {
        try await send(RedisCommand("PUBLISH", channel, message)).int ?? 0
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
