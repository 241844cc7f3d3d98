import Contracts
import Foundation
import RedisKit

/// Failures per subject (a phone number, a client address), counted in Redis so every instance shares
/// the count: after `limit` failures within `window`, the subject is refused with a 429 and Retry-After
/// until the window ends, whatever it sends. A success does not reset the count early, so guessing
/// between the owner's sign-ins gains nothing.
///
/// When Redis cannot be reached the attempt is refused (a Redis error, answered 503): a limit that fails
/// open is no limit.
public struct FailureThrottle: Sendable {
    let redis: RedisClient
    let keyPrefix: String
    let limit: Int
    let window: Duration
    /// The refusal's wording: "for this phone number", "from this address".
    let subject: String

    public init(redis: RedisClient, keyPrefix: String, limit: Int, window: Duration, subject: String) {
        self.redis = redis
        self.keyPrefix = keyPrefix
        self.limit = limit
        self.window = window
        self.subject = subject
    }

    func key(_ subject: String) -> String { "\(keyPrefix):\(subject)" }

    /// Throws 429 when `subject` has used its failures.
    public func check(_ subject: String) async throws {
        let reply = try await redis.pipeline([RedisCommand("GET", key(subject)), RedisCommand("PTTL", key(subject))])
        let failures = reply.first?.int ?? 0
        guard failures >= limit else { return }
        let ttl = reply.count > 1 ? reply[1].int ?? 1000 : 1000
        let seconds = max(1, (ttl + 999) / 1000)
        throw Problem(
            .tooManyRequests, slug: "sign-in-throttled", title: "Too many failed sign-ins",
            detail: "Too many failed sign-ins \(self.subject); try again in \(seconds) s",
            headers: [.retryAfter: String(seconds)])
    }

    /// Counts a failure; the window starts with the first.
    public func failed(_ subject: String) async throws {
        _ = try await redis.pipeline([
            RedisCommand("INCR", key(subject)),
            RedisCommand("PEXPIRE", key(subject), Int(window.millisecondsValue), "NX"),
        ])
    }
}
