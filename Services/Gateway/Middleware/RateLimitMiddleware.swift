import HailKit
import Hummingbird
import Logging
import RedisKit

/// A per-client request budget per window, counted in Redis so every gateway instance shares it.
/// Clients are the signed-in user when known, the peer address otherwise. Over budget: 429 with Retry-After.
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = HailRequestContext
    let redis: RedisClient
    let limit: Int
    let window: Duration
    /// Separates budgets (`auth` before sign-in, `api` after).
    let scope: String
    /// Key prefix, so deployments sharing a Redis keep separate budgets.
    let keyPrefix: String

    /// One atomic step: count the request, start the window on the first one, report count and time left.
    static let script = RedisScript("""
        local count = redis.call('INCR', KEYS[1])
        if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
        local ttl = redis.call('PTTL', KEYS[1])
        if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
        return {count, ttl}
        """)

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let client = context.identity.map { "user:\($0.userID)" } ?? "ip:\(context.remoteAddress ?? "unknown")"
        let key = "\(keyPrefix):\(scope):\(client)"
        let reply: RESPValue
        do {
            reply = try await redis.run(Self.script, keys: [key], arguments: [Int(window.components.seconds * 1000)])
        } catch {
            // Failing open: a Redis outage must not take rides down with it; it is logged and counted.
            context.logger.warning("rate limiter unavailable; request let through", metadata: ["error": "\(error)"])
            return try await next(request, context)
        }
        let values = reply.array ?? []
        let count = values.first?.int ?? 0
        let ttl = values.count > 1 ? values[1].int ?? 1000 : 1000
        if count > limit {
            throw Problem.tooManyRequests(retryAfterSeconds: max(1, (ttl + 999) / 1000))
        }
        var response = try await next(request, context)
        response.headers[.init("RateLimit-Limit")!] = String(limit)
        response.headers[.init("RateLimit-Remaining")!] = String(max(0, limit - count))
        return response
    }
}
