import Contracts
import HailKit
import HTTPTypes
import Hummingbird
import Logging
import RedisKit

/// A per-client request budget per window, shared by every gateway instance through Redis. Clients are
/// the signed-in user when known, the client's address otherwise (`clientAddress`: the peer, or the
/// address the trusted proxies in front put in `X-Forwarded-For`). Over budget: 429 with Retry-After.
///
/// With `checksRevocation`, a signed-out token (login's deny-list) is refused with 401: the
/// authentication in front of it then only verifies the signature.
///
/// Normally neither costs a Redis round trip: the counts are kept here and synchronised in batches
/// (`RequestBudgets`), signed-out tokens learned from login's messages (`Revocations`). When either is
/// not current — Redis down or hung, the subscription lost — each request is counted and checked in
/// Redis by one script instead, and Redis out of reach is a 503, not a free pass.
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = HailRequestContext
    let redis: RedisClient
    let budgets: RequestBudgets
    /// Refuse signed-out tokens (needs an identity in the context: put authentication in front).
    var checksRevocation = false
    /// The deny-list as this instance knows it (with `checksRevocation`); nil: ask Redis every time.
    var revocations: Revocations? = nil

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
        let client = context.identity.map { "user:\($0.userID)" } ?? "ip:\(context.clientAddress ?? "unknown")"
        let now = RequestBudgets.nowMilliseconds()
        // Known here: no round trip.
        let revoked: Bool? = checksRevocation ? context.identity.flatMap { revocations?.isRevoked($0) } : false
        if let revoked {
            if revoked { throw AuthenticationMiddleware.revokedToken }
            switch budgets.take(client, at: now) {
            case .allowed(let remaining):
                return try await answer(request, context, next, remaining: remaining)
            case .refused(let seconds):
                throw Problem.tooManyRequests(retryAfterSeconds: seconds)
            case .unknown:
                break
            }
        }
        var denyKeys: [String] = []
        if checksRevocation {
            guard let identity = context.identity else { throw Problem.unauthorized("Sign in first") }
            denyKeys = AccessTokens.denyListKeys(for: identity)
        }
        // The count and the deny-list side by side: separate commands, since in a Redis Cluster the
        // client's window and the token's and session's entries lie in different slots.
        let reply: RESPValue
        let denied: Int
        do {
            async let counted = redis.run(Self.script, keys: [budgets.key(client, at: now)], arguments: [Int(2 * budgets.windowMilliseconds)])
            async let listed = Self.denyListHits(denyKeys, on: redis)
            (reply, denied) = try await (counted, listed)
        } catch {
            // Fail closed: without Redis neither the budget nor (after sign-in) the deny-list can be
            // checked, and a limit that lets everything through when it is down protects nothing.
            context.logger.error("rate limiter unavailable; request refused", metadata: ["error": "\(error)"])
            throw Problem.unavailable("Requests cannot be counted right now", retryAfterSeconds: 1)
        }
        let values = reply.array ?? []
        if denied > 0 { throw AuthenticationMiddleware.revokedToken }
        let count = values.first?.int ?? 0
        budgets.observe(client, total: count, at: now)
        if count > budgets.limit {
            throw Problem.tooManyRequests(retryAfterSeconds: budgets.retryAfter(at: now))
        }
        return try await answer(request, context, next, remaining: budgets.limit - count)
    }

    static let limitHeader = HTTPField.Name("RateLimit-Limit")!
    static let remainingHeader = HTTPField.Name("RateLimit-Remaining")!

    private func answer(
        _ request: Request, _ context: Context, _ next: (Request, Context) async throws -> Response, remaining: Int
    ) async throws -> Response {
        var response = try await next(request, context)
        response.headers[Self.limitHeader] = String(budgets.limit)
        response.headers[Self.remainingHeader] = String(max(0, remaining))
        return response
    }
}

extension RateLimitMiddleware {
    /// How many of `keys` (a token's and its session's deny-list entries) exist; 0 without keys.
    static func denyListHits(_ keys: [String], on redis: RedisClient) async throws -> Int {
        guard !keys.isEmpty else { return 0 }
        return try await redis.send(RedisCommand("EXISTS", keys)).int ?? 0
    }
}
