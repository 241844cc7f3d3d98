import Contracts
import Hummingbird
import Logging
import RedisKit

/// Requires a valid access token: signature, expiry, issuer, and (when `checkDenyList`) not on the
/// deny-list of signed-out tokens. The identity it finds goes into the request context for the routes
/// behind it.
///
/// The gateway checks the deny-list on every request; a service behind it checks the token the gateway
/// forwards again (so nothing reaches it unsigned: the signature, or the gateway's attestation of it, see
/// `TokenAttestations`) and checks the deny-list again too. With
/// `revocations` (kept current by a `RevocationListener`) that check costs no round trip; while they are
/// not current it asks Redis.
public struct AuthenticationMiddleware: RouterMiddleware {
    public typealias Context = HailRequestContext
    let tokens: AccessTokens
    let redis: RedisClient
    let checkDenyList: Bool
    let revocations: Revocations?

    public init(tokens: AccessTokens, redis: RedisClient, checkDenyList: Bool = true, revocations: Revocations? = nil) {
        self.tokens = tokens
        self.redis = redis
        self.checkDenyList = checkDenyList
        self.revocations = revocations
    }

    /// The identity an access token proves: signature, expiry and issuer, and (when `checkDenyList`) not
    /// signed out. Throws the 401 (or, when the deny-list cannot be read, 503) problem to answer. Also
    /// for tokens that do not come in a header (the gateway's WebSocket takes it from the query).
    public func identity(token: String, attestation: String? = nil, logger: Logger) async throws -> Identity {
        let claims = try tokens.verify(token, attestation: attestation)
        guard checkDenyList else { return claims.identity }
        if let known = revocations?.isRevoked(claims.identity) {
            if known { throw Self.revokedToken }
            return claims.identity
        }
        let revoked: Bool
        do {
            revoked = (try await redis.send(RedisCommand("EXISTS", AccessTokens.denyListKeys(for: claims.identity))).int ?? 0) > 0
        } catch {
            // Without the deny-list a signed-out token could pass: refuse rather than guess.
            logger.error("deny-list unavailable", metadata: ["error": "\(error)"])
            throw Problem.unavailable("Sessions cannot be checked right now", retryAfterSeconds: 1)
        }
        if revoked { throw Self.revokedToken }
        return claims.identity
    }

    /// The answer to a token that was signed out.
    public static let revokedToken = Problem(
        .unauthorized, slug: "token-revoked", title: "The access token is not valid",
        detail: "The access token was revoked: its session was signed out or its refresh token used twice", headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])

    public func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let header = request.headers[.authorization] else {
            throw Problem.unauthorized("Send the access token in an Authorization: Bearer header")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer", !parts[1].isEmpty else {
            throw Problem.unauthorized("The Authorization header must be 'Bearer <access token>'")
        }
        let identity = try await identity(
            token: String(parts[1]), attestation: request.headers[HailHeaders.verifiedToken], logger: context.logger)
        var context = context
        context.identity = identity
        context.logger[metadataKey: "user"] = .string(identity.userID)
        return try await next(request, context)
    }
}
