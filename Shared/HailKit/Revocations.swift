import Contracts
import Foundation
import Logging
import RedisKit
import ServiceLifecycle
import Synchronization

/// Access tokens and sessions that were signed out, as this process learned them from login's
/// `auth:revoked` messages (and the deny-list already in Redis when it subscribed), so that a request
/// needs no Redis round trip to be checked against the deny-list.
///
/// `current` is true only while the subscription is up and the deny-list was read after it began: a
/// revocation published while it was down could be missing, so the caller then asks Redis per request.
/// Entries are kept for `keep` (the longest an access token can live: 24 h), at most `capacity`.
public final class Revocations: Sendable {
    private let state = Mutex<(tokens: [String: ContinuousClock.Instant], sessions: [String: ContinuousClock.Instant], current: Bool)>(
        ([:], [:], false))
    let keep: Duration
    let capacity: Int

    public init(keep: Duration = .seconds(86_400), capacity: Int = 1_000_000) {
        self.keep = keep
        self.capacity = capacity
    }

    /// Whether `identity`'s token or session was revoked; nil when that cannot be known here.
    public func isRevoked(_ identity: Identity) -> Bool? {
        state.withLock { state in
            guard state.current else { return nil }
            if state.tokens[identity.tokenID] != nil { return true }
            if let session = identity.sessionID, state.sessions[session] != nil { return true }
            return false
        }
    }

    public func revoke(tokenID: String?, sessionID: String?) {
        let until = ContinuousClock.now + keep
        state.withLock { state in
            if state.tokens.count + state.sessions.count >= capacity { Self.prune(&state) }
            if let tokenID { state.tokens[tokenID] = until }
            if let sessionID { state.sessions[sessionID] = until }
        }
    }

    /// The subscription ended: until it is back and the deny-list read again, nothing is known here.
    /// Applies one `auth:revoked` message (a `SessionRevocation`); anything else is ignored.
    public func apply(message text: String) {
        guard let revocation = try? JSONBody.decoder.decode(SessionRevocation.self, from: Data(text.utf8)) else { return }
        revoke(tokenID: revocation.tokenID, sessionID: revocation.sessionID)
    }

    public func lost() {
        state.withLock { $0.current = false }
    }

    /// Reads the deny-list in Redis (call once subscribed) and marks the set current.
    public func reload(redis: RedisClient) async throws {
        var tokens: [String] = []
        var sessions: [String] = []
        let sessionPrefix = AccessTokens.sessionDenyListKey(sessionID: "")
        let tokenPrefix = AccessTokens.denyListKey(tokenID: "")
        for key in try await redis.keys(matching: tokenPrefix + "*") {
            if key.hasPrefix(sessionPrefix) {
                sessions.append(String(key.dropFirst(sessionPrefix.count)))
            } else {
                tokens.append(String(key.dropFirst(tokenPrefix.count)))
            }
        }
        let until = ContinuousClock.now + keep
        state.withLock { state in
            for token in tokens { state.tokens[token] = until }
            for session in sessions { state.sessions[session] = until }
            Self.prune(&state)
            state.current = true
        }
    }

    private static func prune(_ state: inout (tokens: [String: ContinuousClock.Instant], sessions: [String: ContinuousClock.Instant], current: Bool)) {
        let now = ContinuousClock.now
        state.tokens = state.tokens.filter { $0.value > now }
        state.sessions = state.sessions.filter { $0.value > now }
    }
}


/// Keeps a `Revocations` current: subscribes to `auth:revoked`, then reads the deny-list already in
/// Redis, then applies every message; marks it not current whenever the subscription is lost, and
/// subscribes again (backing off up to 2 s) until shutdown.
public struct RevocationListener: Service {
    let redis: RedisClient
    let revocations: Revocations
    let logger: Logger

    public init(redis: RedisClient, revocations: Revocations, logger: Logger) {
        self.redis = redis
        self.revocations = revocations
        self.logger = logger
    }

    public func run() async throws {
        var failures = 0
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let subscription = try await redis.subscribe(channels: [SessionRevocation.channel])
                do {
                    try await revocations.reload(redis: redis)
                    failures = 0
                    try await cancelWhenGracefulShutdown {
                        for try await message in subscription.messages {
                            revocations.apply(message: message.text)
                        }
                    }
                } catch {
                    revocations.lost()
                    await subscription.close()
                    throw error
                }
                revocations.lost()
                await subscription.close()
            } catch is CancellationError {
                break
            } catch {
                failures += 1
                logger.warning("revocation subscription lost; subscribing again", metadata: ["error": "\(error)"])
                let pause = Duration.milliseconds(min(100 * failures, 2000))
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
            }
        }
    }
}
