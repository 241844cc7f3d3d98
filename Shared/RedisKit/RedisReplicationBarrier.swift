/// Waits until a Redis server's replicas have what it has written so far — for many callers at once,
/// without holding up anyone else's commands.
///
/// `WAIT` blocks the connection it is sent on until the replicas acknowledge that connection's last
/// write, so sent after each caller's command on the shared, pipelined pool it would stall every command
/// queued behind it for as long as a replica is slow. Instead, a caller whose command has been answered
/// asks the barrier: on a connection of its own, the barrier writes to `key` (Redis's replication offset
/// is one for the whole server, so that write comes after every write answered before it) and sends
/// `WAIT`; every caller that asked meanwhile shares that one round, and those who ask while it is out
/// share the next. In a cluster the barrier's connection goes to the master of `key`'s slot, so a
/// barrier per slot is needed for writes on different masters.
public actor RedisReplicationBarrier {
    private let redis: RedisClient
    private let key: String
    private let replicas: Int
    private let timeout: Duration
    private var connection: RedisConnection?
    private var waiting: [CheckedContinuation<Int, any Error>] = []
    private var running = false

    /// `replicas` to wait for, at most `timeout` per round; `key` names the server (or the slot's master).
    public init(redis: RedisClient, key: String, replicas: Int, timeout: Duration) {
        self.redis = redis
        self.key = key
        self.replicas = replicas
        self.timeout = timeout
    }

    /// How many replicas had every write the server answered before this call (fewer than asked for when
    /// `timeout` ran out). Throws when the server could not be asked (its connection closed: a master
    /// that died may have taken unreplicated writes with it).
    public func wait() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            waiting.append(continuation)
            if !running {
                running = true
                Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while !waiting.isEmpty {
            let round = waiting
            waiting = []
            do {
                let acknowledged = try await ask()
                for caller in round { caller.resume(returning: acknowledged) }
            } catch {
                if let connection { await connection.close() }
                connection = nil
                redis.refreshClusterMap()
                for caller in round { caller.resume(throwing: error) }
            }
        }
        running = false
    }

    private func ask() async throws -> Int {
        let connection: RedisConnection
        if let open = self.connection, open.isActive {
            connection = open
        } else {
            connection = try await redis.dedicatedConnection(forKey: key)
            self.connection = connection
        }
        let milliseconds = max(1, Int(timeout / .milliseconds(1)))
        let replies = try await connection.pipeline(
            [RedisCommand("INCR", key), RedisCommand("WAIT", replicas, milliseconds)], allowance: timeout)
        for reply in replies {
            if case .error(let message) = reply { throw RedisError.server(message) }
        }
        return replies.count == 2 ? replies[1].int ?? 0 : 0
    }
}
