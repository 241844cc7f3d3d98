import Contracts
import Foundation
import HTTPTypes

/// The token a service sends when it calls another on its own behalf rather than for a user: matching
/// assigning an order it dispatched, order-grab handing over a won grab. Signed with the shared key like
/// every access token, with the `service` role and the service's name as subject, and renewed before it
/// expires; nobody can sign up with that role, so only a holder of the key can make one.
public actor ServiceCredentials {
    private let tokens: AccessTokens
    private let service: String
    private let lifetime: TimeInterval
    private var current: (token: String, expiresAt: Date)?

    public init(tokens: AccessTokens, service: String, lifetime: Duration = .seconds(600)) {
        self.tokens = tokens
        self.service = service
        self.lifetime = TimeInterval(lifetime.components.seconds)
    }

    /// An `Authorization` header carrying a token valid for at least another minute.
    public func headers() async throws -> HTTPFields {
        let now = Date()
        if let current, current.expiresAt.timeIntervalSince(now) > 60 {
            return [.authorization: "Bearer \(current.token)"]
        }
        let expiresAt = now + lifetime
        let token = try await tokens.sign(AccessTokenClaims(
            userID: service, role: .service, tokenID: RandomID.uuid(), issuedAt: now, expiresAt: expiresAt))
        current = (token, expiresAt)
        return [.authorization: "Bearer \(token)"]
    }
}
