import Configuration
import Contracts
import Foundation
import JWTKit

/// The claims of a Hailstorm access token.
public struct AccessTokenClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var role: Role
    public var jti: IDClaim
    public var iat: IssuedAtClaim
    public var exp: ExpirationClaim
    public var iss: IssuerClaim

    public init(userID: String, role: Role, tokenID: String, issuedAt: Date, expiresAt: Date) {
        self.sub = SubjectClaim(value: userID)
        self.role = role
        self.jti = IDClaim(value: tokenID)
        self.iat = IssuedAtClaim(value: issuedAt)
        self.exp = ExpirationClaim(value: expiresAt)
        self.iss = IssuerClaim(value: AccessTokens.issuer)
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        guard iss.value == AccessTokens.issuer else {
            throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "not issued by Hailstorm")
        }
    }

    public var identity: Identity {
        Identity(userID: sub.value, role: role, tokenID: jti.value)
    }
}

/// Signs and verifies access tokens (HS256 with the shared signing key).
///
/// The login service signs; the gateway (and any service that wants to) verifies with the same key.
public struct AccessTokens: Sendable {
    public static let issuer = "hailstorm"
    /// The key used when none is configured: fine on a laptop, refused in production mode.
    public static let developmentKey = "hailstorm-development-signing-key-do-not-use-in-production"

    private let keys: JWTKeyCollection

    public init(signingKey: String) async {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: signingKey), digestAlgorithm: .sha256)
        self.keys = keys
    }

    /// Reads `auth.jwt.secret` (secret). In production mode a missing, default or short key stops the
    /// service from starting: tokens signed with a published key would let anyone in.
    public static func signingKey(from configuration: ServiceConfiguration, reader: ConfigReader) throws -> String {
        let key = reader.string(forKey: "auth.jwt.secret", isSecret: true) ?? developmentKey
        if configuration.mode == .production {
            guard key != developmentKey else {
                throw ConfigurationError("production mode needs auth.jwt.secret (AUTH_JWT_SECRET): the development key is public")
            }
            guard key.utf8.count >= 32 else {
                throw ConfigurationError("auth.jwt.secret must be at least 32 bytes in production mode")
            }
        }
        return key
    }

    /// The Redis key that marks an access token as signed out until it expires. Login writes it,
    /// the gateway refuses tokens that have it.
    public static func denyListKey(tokenID: String) -> String { "auth:deny:\(tokenID)" }

    public func sign(_ claims: AccessTokenClaims) async throws -> String {
        try await keys.sign(claims)
    }

    /// The claims of a valid token; throws a 401 problem naming why a token is not valid.
    public func verify(_ token: String) async throws -> AccessTokenClaims {
        do {
            return try await keys.verify(token, as: AccessTokenClaims.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw Problem(
                .unauthorized, slug: "token-expired", title: "The access token is not valid",
                detail: "The access token has expired; refresh it", headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])
        } catch {
            throw Problem(
                .unauthorized, slug: "invalid-token", title: "The access token is not valid",
                detail: "The access token is malformed or its signature does not verify",
                headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])
        }
    }
}

