import Contracts
import HailKit
import Hummingbird
import Logging
import RedisKit

/// A per-client request budget per window, counted in Redis so every gateway instance shares it.
/// Clients are the signed-in user when known, the client's address otherwise (`clientAddress`: the peer,
/// or the address the trusted proxies in front put in `X-Forwarded-For`). Over budget: 429 with
/// Retry-After. Redis out of reach: 503, not a free pass.
///
/// With `checksRevocation`, the same round trip also asks whether the caller's token was signed out
/// (login's deny-list) and answers 401 if so: the authentication in front of it then only verifies the
/// signature, and a request through the gateway costs one Redis round trip instead of two.
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = HailRequestContext
    let redis: RedisClient
    let limit: Int
    let window: Duration
    /// Separates budgets (`auth` before sign-in, `api` after).
    let scope: String
    /// Key prefix, so deployments sharing a Redis keep separate budgets.
    let keyPrefix: String
    /// Refuse signed-out tokens (needs an identity in the context: put authentication in front).
    var checksRevocation = false

    /// One atomic step: refuse a revoked token (any of KEYS[2…]: the token, its session), else count the
    /// request, start the window on the first one, report count and time left.
    static let script = RedisScript("""
        for i = 2, #KEYS do
          if redis.call('EXISTS', KEYS[i]) == 1 then return {0, 0, 1} end
        end
        local count = redis.call('INCR', KEYS[1])
        if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
        local ttl = redis.call('PTTL', KEYS[1])
        if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
        return {count, ttl, 0}
        """)

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let client = context.identity.map { "user:\($0.userID)" } ?? "ip:\(context.clientAddress ?? "unknown")"
        let key = "\(keyPrefix):\(scope):\(client)"
        var keys = [key]
        if checksRevocation {
            guard let identity = context.identity else { throw Problem.unauthorized("Sign in first") }
            keys.append(contentsOf: AccessTokens.denyListKeys(for: identity))
        }
        let reply: RESPValue
        do {
            reply = try await redis.run(Self.script, keys: keys, arguments: [Int(window.components.seconds * 1000)])
        } catch {
            // Fail closed: without Redis neither the budget nor (after sign-in) the deny-list can be
            // checked, and a limit that lets everything through when it is down protects nothing.
            context.logger.error("rate limiter unavailable; request refused", metadata: ["error": "\(error)"])
            throw Problem.unavailable("Requests cannot be counted right now", retryAfterSeconds: 1)
        }
        let values = reply.array ?? []
        if values.count > 2, values[2].int == 1 { throw AuthenticationMiddleware.revokedToken }
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
