import Contracts
import Foundation
import Logging
import RedisKit
import Synchronization

/// The "request answered" lines of sampled requests — a caller's `traceparent` with the sampled flag —
/// kept in Redis for `ttl` under their trace id and their request id, from every service a request
/// passed through, so that one request can be followed across services in every way Hailstorm runs (local
/// processes, containers, pods) without reading anyone's log files. Unsampled requests cost nothing; a
/// sampled one costs each service a pipelined write after it answered, off the answer's path, for at most
/// `perSecond` requests a second per instance (`trace.sampled.per.second`, 50).
public final class TraceLines: Sendable {
    public let redis: RedisClient
    public let service: String
    public let instance: String
    public let ttl: Duration
    /// Lines kept per trace or request id, the first ones.
    public let limit: Int

    /// Sampled requests this instance writes lines for in one second; more are treated as unsampled.
    public let perSecond: Int
    private let admitted: Mutex<(second: Int64, count: Int)>

    public init(
        redis: RedisClient, service: String, instance: String, ttl: Duration = .seconds(3600), limit: Int = 500, perSecond: Int = 50
    ) {
        self.redis = redis
        self.service = service
        self.instance = instance
        self.ttl = ttl
        self.limit = limit
        self.perSecond = perSecond
        self.admitted = Mutex((0, 0))
    }

    /// Whether one more sampled request fits this second's budget (it is counted).
    public func admit(now: Date = Date()) -> Bool {
        let second = Int64(now.timeIntervalSince1970)
        return admitted.withLock { window in
            if window.second != second { window = (second, 0) }
            guard window.count < perSecond else { return false }
            window.count += 1
            return true
        }
    }

    public static func key(_ id: String) -> String { "trace:lines:\(id)" }

    /// Writes `line` under its trace id and its request id, in a task of its own: the answer never waits for it.
    public func record(_ line: TraceLine, logger: Logger) {
        guard let text = try? String(decoding: JSONEncoder().encode(line), as: UTF8.self) else { return }
        let seconds = String(max(1, Int(ttl.secondsValue)))
        let keys = Set([Self.key(line.traceID), Self.key(line.requestID)])
        let redis = redis, limit = limit
        Task {
            var commands: [RedisCommand] = []
            for key in keys.sorted() {
                commands.append(RedisCommand("RPUSH", key, text))
                commands.append(RedisCommand("LTRIM", key, "0", String(limit - 1)))
                commands.append(RedisCommand("EXPIRE", key, seconds))
            }
            do {
                _ = try await redis.pipeline(commands)
            } catch {
                logger.debug("trace line not kept", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Every line kept for a trace id or a request id, in the order the services received their requests.
    public static func lines(for id: String, redis: RedisClient) async throws -> [TraceLine] {
        let reply = try await redis.send("LRANGE", key(id), "0", "-1")
        let decoder = JSONDecoder()
        return (reply.array ?? []).compactMap { $0.string }.compactMap { try? decoder.decode(TraceLine.self, from: Data($0.utf8)) }
            .sorted { ($0.at, $0.service) < ($1.at, $1.service) }
    }
}
