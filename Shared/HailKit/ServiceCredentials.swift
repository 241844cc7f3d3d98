import Contracts
import Foundation
import HTTPTypes

/// The tokens a service sends when it calls another on its own behalf rather than for a user: matching
/// assigning an order it dispatched, order-grab handing over a won grab. Each is signed with the calling
/// service's own key (so it can name nobody but that service), names the one service it is for (`aud`),
/// lives `lifetime`, and is renewed a minute before it expires.
public actor ServiceCredentials {
    private let tokens: AccessTokens
    private let lifetime: TimeInterval
    private var current: [String: (token: String, expiresAt: Date)] = [:]

    /// Throws when the service holds no signing key: it could not call anyone on its own behalf.
    public init(tokens: AccessTokens, lifetime: Duration = .seconds(300)) throws {
        guard tokens.issuer != nil else {
            throw ConfigurationError("\(tokens.service) calls other services on its own behalf and needs auth.signing.key")
        }
        self.tokens = tokens
        self.lifetime = lifetime.secondsValue
    }

    /// An `Authorization` header for a call to `callee`, with a token valid for at least another minute.
    public func headers(for callee: String) async throws -> HTTPFields {
        let now = Date()
        if let held = current[callee], held.expiresAt.timeIntervalSince(now) > 60 {
            return [.authorization: "Bearer \(held.token)"]
        }
        let token = try await tokens.serviceToken(for: callee, lifetime: lifetime, now: now)
        current[callee] = (token, now + lifetime)
        return [.authorization: "Bearer \(token)"]
    }
}
