import Configuration
import Contracts
import Foundation
import JWTKit
import Synchronization

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
    private let verified: VerifiedTokens

    /// `cacheSize`: how many verified tokens are remembered (see `VerifiedTokens`); 0 verifies every time.
    public init(signingKey: String, cacheSize: Int = 20_000) async {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: signingKey), digestAlgorithm: .sha256)
        self.keys = keys
        self.verified = VerifiedTokens(capacity: cacheSize)
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
        if let claims = verified.claims(for: token, now: Date()) { return claims }
        do {
            let claims = try await keys.verify(token, as: AccessTokenClaims.self)
            verified.remember(token, claims)
            return claims
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


/// Tokens whose signature and issuer were verified, by their exact text, with their claims.
///
/// A rider pressing "claim" in a flash sale sends the same token many times a second, and the gateway and
/// the service behind it each verify it: base64, two JSON decodes and an HMAC every time, through
/// jwt-kit's key collection (an actor every request queues on). Remembering the outcome makes a repeat a
/// dictionary lookup. It is safe because the key is the whole token, signature included (a token altered
/// in any byte is a different key and is verified afresh), and because expiry is checked again on every
/// hit. Revocation is not cached here: the deny-list is asked separately, each time.
///
/// Two generations bound the memory: when the current one is full it becomes the previous one and the
/// one before is dropped, so tokens in use stay and old ones age out without a per-entry clock.
final class VerifiedTokens: Sendable {
    private struct Generations {
        var current: [String: AccessTokenClaims] = [:]
        var previous: [String: AccessTokenClaims] = [:]
    }
    private let capacity: Int
    private let state = Mutex(Generations())

    init(capacity: Int) {
        self.capacity = max(0, capacity)
    }

    func claims(for token: String, now: Date) -> AccessTokenClaims? {
        guard capacity > 0 else { return nil }
        let found: AccessTokenClaims? = state.withLock { state in
            if let claims = state.current[token] { return claims }
            guard let claims = state.previous.removeValue(forKey: token) else { return nil }
            Self.insert(token, claims, into: &state, capacity: capacity)
            return claims
        }
        guard let found, found.exp.value > now else { return nil }
        return found
    }

    func remember(_ token: String, _ claims: AccessTokenClaims) {
        guard capacity > 0 else { return }
        state.withLock { Self.insert(token, claims, into: &$0, capacity: capacity) }
    }

    private static func insert(_ token: String, _ claims: AccessTokenClaims, into state: inout Generations, capacity: Int) {
        if state.current.count >= capacity {
            state.previous = state.current
            state.current = [:]
            state.current.reserveCapacity(capacity)
        }
        state.current[token] = claims
    }
}
