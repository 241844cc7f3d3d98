import Configuration
import Contracts
import Crypto
import Foundation
import JWTKit
import Metrics
import Synchronization

/// The claims of a Hailstorm token: a user's access token (signed by login) or a service's credential
/// (signed by that service, for one callee).
public struct AccessTokenClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var role: Role
    public var jti: IDClaim
    public var iat: IssuedAtClaim
    public var exp: ExpirationClaim
    /// Who signed: `login` for users' tokens, the calling service for a service credential. It must be the
    /// owner of the signing key (`kid` is `<issuer>:<version>`).
    public var iss: IssuerClaim
    /// Who may accept it: `hailstorm` (every part of the platform) for users' tokens, the one service
    /// called for a service credential.
    public var aud: AudienceClaim
    /// The sign-in session (refresh-token family) a user's token belongs to; signing out revokes it whole.
    public var sid: String?

    public init(
        userID: String, role: Role, tokenID: String, issuedAt: Date, expiresAt: Date,
        issuer: String = AccessTokens.userIssuer, audience: String = AccessTokens.userAudience, sessionID: String? = nil
    ) {
        self.sub = SubjectClaim(value: userID)
        self.role = role
        self.jti = IDClaim(value: tokenID)
        self.iat = IssuedAtClaim(value: issuedAt)
        self.exp = ExpirationClaim(value: expiresAt)
        self.iss = IssuerClaim(value: issuer)
        self.aud = AudienceClaim(value: [audience])
        self.sid = sessionID
    }

    /// Expiry only; who signed and for whom is `AccessTokens.verify`'s, which knows the keys' owners.
    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }

    public var identity: Identity {
        Identity(userID: sub.value, role: role, tokenID: jti.value, sessionID: sid)
    }
}

/// Claims read off a token's payload without Foundation's decoder when it has the shape jwt-kit writes
/// for them: these eight keys at most, each once, strings without escapes, times as numbers, `aud` a
/// string or an array of strings. Anything else (another key, `nbf`, an escape) is left to jwt-kit's
/// parser. Only a token whose signature checked out is read, so only what a trusted key signed.
extension AccessTokenClaims: ScannableJSON {
    private static let keys: [StaticString] = ["aud", "exp", "iat", "iss", "jti", "role", "sid", "sub"]

    public init?(scanning scanner: inout JSONScanner) {
        var aud: [String]? = nil, iss: String? = nil, jti: String? = nil, sub: String? = nil, sid: String? = nil
        var exp: Double? = nil, iat: Double? = nil
        var role: Role? = nil
        let seen = scanner.object(Self.keys) { key, scanner in
            switch key {
            case 0:
                if let one = scanner.string() { aud = [one] } else { aud = scanner.array { $0.string() } }
                return aud != nil
            case 1: exp = scanner.number(); return exp != nil
            case 2: iat = scanner.number(); return iat != nil
            case 3: iss = scanner.string(); return iss != nil
            case 4: jti = scanner.string(); return jti != nil
            case 5: role = scanner.value(Role.self); return role != nil
            case 6:
                guard let value = scanner.optionalString() else { return false }
                sid = value
                return true
            default: sub = scanner.string(); return sub != nil
            }
        }
        // Every claim but `sid` is required: without one, jwt-kit's parser says which.
        guard let seen, seen & 0b1011_1111 == 0b1011_1111, let aud, let exp, let iat, let iss, let jti, let role, let sub
        else { return nil }
        self.sub = SubjectClaim(value: sub)
        self.role = role
        self.jti = IDClaim(value: jti)
        self.iat = IssuedAtClaim(value: Date(timeIntervalSince1970: iat))
        self.exp = ExpirationClaim(value: Date(timeIntervalSince1970: exp))
        self.iss = IssuerClaim(value: iss)
        self.aud = AudienceClaim(value: aud)
        self.sid = sid
    }
}

/// Signs and verifies Hailstorm's tokens with ES256 (ECDSA P-256) keys.
///
/// Every key belongs to one issuer, named in its key id (`login:2026-12`, `matching:1`). Login holds the
/// only private key that can sign a user's token; each other service holds a private key that can sign
/// only its own service credentials (`sub` = `iss` = itself, role `service`, `aud` = the one service it
/// calls). Every part of the platform verifies with the public keys of the deployment's JWKS
/// (`auth.jwks`): a token is accepted when its `alg` is ES256, its `kid` is in the JWKS, its `iss` is the
/// key's owner, and
/// - `iss` is login: the role is a user's (not `service`) and `aud` holds `hailstorm`;
/// - `iss` is another service: the role is `service`, `sub` is that service, and `aud` holds the
///   verifying service's own name.
/// Two keys of login in the JWKS at once is a rotation (`docs/security.md`).
public struct AccessTokens: Sendable {
    public static let userIssuer = "login"
    public static let userAudience = "hailstorm"
    public static let algorithm = "ES256"

    /// The service that verifies (the audience its service credentials must name).
    public let service: String
    /// The issuer this service signs as (the owner of its key), when it holds one.
    public let issuer: String?
    private let signingKID: JWKIdentifier?
    /// jwt-kit's algorithm of each trusted key, by kid: a token is verified with it on the caller's thread,
    /// without a trip through the key collection's actor (which only signs).
    private let verifiers: [String: any JWTAlgorithm]
    private let keys: JWTKeyCollection
    private let verified: VerifiedTokens
    /// The gateway's attestations this service makes (as the gateway) or accepts (as a service behind it).
    public private(set) var attestations: TokenAttestations
    /// Tokens checked (not found in `verified`), by how: `hailstorm_tokens_verified_total{by=signature|attestation}`.
    private let bySignature: Counter
    private let byAttestation: Counter

    /// - Parameters:
    ///   - service: the verifying service's name.
    ///   - signingKey: this service's private key (PEM, or base64url of the raw P-256 scalar), or nil when it
    ///     signs nothing; its public key must be in `jwks`, whose entry gives its `kid`.
    ///   - jwks: the public keys this deployment trusts, as a JWKS document.
    ///   - cacheSize: how many verified tokens are remembered (see `VerifiedTokens`); 0 verifies every time.
    public init(service: String, signingKey: String?, jwks: String, cacheSize: Int = 20_000) async throws {
        let document = try TokenKeys.parse(jwks: jwks)
        let keys = JWTKeyCollection()
        var trusted: Set<String> = []
        for key in document.keys {
            guard key.kty == "EC", key.crv == "P-256", (key.alg ?? Self.algorithm) == Self.algorithm, TokenKeys.owner(of: key.kid) != nil else {
                throw ConfigurationError("auth.jwks: key \(key.kid) is not an ES256 (EC P-256) key with a kid '<issuer>:<version>'")
            }
            let publicKey = try ES256PublicKey(parameters: (x: key.x, y: key.y))
            await keys.add(ecdsa: publicKey, kid: JWKIdentifier(string: key.kid))
            trusted.insert(key.kid)
        }
        var signingKID: JWKIdentifier? = nil
        var issuer: String? = nil
        var attestations = TokenAttestations.none
        if let signingKey {
            let privateKey = try TokenKeys.privateKey(signingKey)
            let parameters = privateKey.parameters
            guard let entry = document.keys.first(where: { $0.x == parameters?.x && $0.y == parameters?.y }) else {
                throw ConfigurationError("auth.signing.key: its public key is not in auth.jwks, so nobody would accept what it signs")
            }
            signingKID = JWKIdentifier(string: entry.kid)
            issuer = TokenKeys.owner(of: entry.kid)
            // The private key replaces the public one under the same kid: it verifies as well as signs.
            await keys.add(ecdsa: privateKey, kid: JWKIdentifier(string: entry.kid))
            attestations = try TokenAttestations(
                privateKey: try TokenKeys.agreementPrivateKey(signingKey), ownKID: entry.kid, document: document)
        }
        self.service = service
        self.issuer = issuer
        self.signingKID = signingKID
        var verifiers: [String: any JWTAlgorithm] = [:]
        for kid in trusted {
            verifiers[kid] = try await keys.getKey(for: JWKIdentifier(string: kid), alg: Self.algorithm)
        }
        self.verifiers = verifiers
        self.keys = keys
        self.verified = VerifiedTokens(capacity: cacheSize)
        self.attestations = attestations
        self.bySignature = Counter(label: "hailstorm_tokens_verified_total", dimensions: [("service", service), ("by", "signature")])
        self.byAttestation = Counter(label: "hailstorm_tokens_verified_total", dimensions: [("service", service), ("by", "attestation")])
    }

    /// Reads `auth.jwks` (the deployment's public keys, a JWKS document), or `auth.jwks.file` (a file
    /// holding it, such as a mounted ConfigMap), and `auth.signing.key` (secret; this service's private
    /// key). Without a JWKS the service cannot check a token, so it does not start; `hailstorm up` writes a
    /// run's keys, `hailstorm keys` makes a set for other deployments. `auth.jwt.cache.size`: see
    /// `VerifiedTokens`.
    public static func configured(service: String, reader: ConfigReader, cacheSize: Int = 20_000) async throws -> AccessTokens {
        var jwks = reader.string(forKey: "auth.jwks") ?? ""
        if jwks.isEmpty, let file = reader.string(forKey: "auth.jwks.file"), !file.isEmpty {
            do {
                jwks = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw ConfigurationError("auth.jwks.file \(file) cannot be read: \(error)")
            }
        }
        guard !jwks.isEmpty else {
            throw ConfigurationError(
                "auth.jwks (AUTH_JWKS) or auth.jwks.file is not set: the public keys tokens are verified with (`hailstorm keys` makes a set)")
        }
        let signingKey = reader.string(forKey: "auth.signing.key", isSecret: true).flatMap { $0.isEmpty ? nil : $0 }
        return try await AccessTokens(service: service, signingKey: signingKey, jwks: jwks, cacheSize: cacheSize)
    }

    /// The Redis key that marks an access token as signed out until it expires. Login writes it,
    /// the gateway and the services refuse tokens that have it.
    public static func denyListKey(tokenID: String) -> String { "auth:deny:\(tokenID)" }

    /// The Redis key that marks a whole sign-in session as ended: every access token it issued is refused.
    public static func sessionDenyListKey(sessionID: String) -> String { "auth:deny:session:\(sessionID)" }

    /// The deny-list keys that concern `identity`: its token, and its session when it has one.
    public static func denyListKeys(for identity: Identity) -> [String] {
        [denyListKey(tokenID: identity.tokenID)] + (identity.sessionID.map { [sessionDenyListKey(sessionID: $0)] } ?? [])
    }

    /// Signs `claims` with this service's key. Its `iss` must be this service's issuer: a service can only
    /// speak for itself, and only login's tokens are accepted as users'.
    public func sign(_ claims: AccessTokenClaims) async throws -> String {
        guard let signingKID, let issuer else {
            throw ConfigurationError("\(service) holds no signing key (auth.signing.key)")
        }
        guard claims.iss.value == issuer else {
            throw ConfigurationError("\(service) signs as \(issuer), not as \(claims.iss.value)")
        }
        return try await keys.sign(claims, kid: signingKID)
    }

    /// A credential of this service for calling `callee`, valid for `lifetime`.
    public func serviceToken(for callee: String, lifetime: TimeInterval, now: Date = Date()) async throws -> String {
        guard let issuer else { throw ConfigurationError("\(service) holds no signing key (auth.signing.key)") }
        return try await sign(AccessTokenClaims(
            userID: issuer, role: .service, tokenID: RandomID.uuid(), issuedAt: now, expiresAt: now + lifetime,
            issuer: issuer, audience: callee))
    }

    /// A token verified before and not expired since, with its claims, without verifying anything: nil
    /// when it is not remembered (then `verify` it). For callers that cannot wait, such as a channel handler.
    public func remembered(_ token: String) -> VerifiedToken? {
        verified.entry(for: token, now: Date())
    }

    /// The claims of a valid token; throws a 401 problem naming why a token is not valid. With the
    /// gateway's `attestation` of it (`X-Hailstorm-Verified`, see `TokenAttestations`) that checks out,
    /// the claims it states (a user's token the gateway verified), their expiry checked here. All on the
    /// caller's thread: a remembered token is a lookup, an attested one an HMAC, a new one an ES256 check.
    public func verify(_ token: String, attestation: String? = nil) throws -> AccessTokenClaims {
        if let attestation, let claims = attestations.claims(in: attestation, for: token) {
            guard claims.exp.value > Date() else { throw Self.expired }
            byAttestation.increment()
            return claims
        }
        if let claims = verified.claims(for: token, now: Date()) { return claims }
        guard let kid = Self.pinnedKeyID(of: token), let algorithm = verifiers[kid], let owner = TokenKeys.owner(of: kid) else {
            throw Self.invalid("The access token is malformed, not ES256, or signed with a key this platform does not trust")
        }
        let claims: AccessTokenClaims
        do {
            // As jwt-kit's key collection does it: the signature over `header.payload` first, then the
            // payload, then its expiry.
            let bytes = Array(token.utf8)
            guard let dot = bytes.lastIndex(of: UInt8(ascii: ".")),
                let signature = Data(base64URL: token[token.utf8.index(token.utf8.startIndex, offsetBy: dot + 1)...]),
                try algorithm.verify(signature, signs: bytes[..<dot])
            else { throw JWTError.signatureVerificationFailed }
            claims = try Self.claims(of: bytes, signedUpTo: dot)
            try claims.exp.verifyNotExpired()
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw Self.expired
        } catch {
            throw Self.invalid("The access token is malformed or its signature does not verify")
        }
        bySignature.increment()
        guard claims.iss.value == owner else { throw Self.invalid("The token's issuer does not own its signing key") }
        if owner == Self.userIssuer {
            guard claims.role != .service, claims.aud.value.contains(Self.userAudience) else {
                throw Self.invalid("The token is not a user's access token")
            }
        } else {
            guard claims.role == .service, claims.sub.value == owner, claims.aud.value.contains(service) else {
                throw Self.invalid("The service credential is not \(owner)'s, or not for \(service)")
            }
        }
        verified.remember(token, claims)
        return claims
    }

    private static let parser = DefaultJWTParser()

    /// The claims of a token whose signature over `bytes[..<end]` checked out: its payload read straight
    /// from the bytes when it has the plain shape Hailstorm's signers write (`AccessTokenClaims`'
    /// `ScannableJSON`), by jwt-kit's parser otherwise, which reads (or refuses) it as before. Every new
    /// token costs this once: with Foundation's decoder it cost the gateway nearly twice the ES256 check
    /// itself, and a flash sale's first second is thousands of tokens the gateway has never seen.
    static func claims(of bytes: [UInt8], signedUpTo end: Int) throws -> AccessTokenClaims {
        let dot = UInt8(ascii: ".")
        if let first = bytes.firstIndex(of: dot), first < end, !bytes[(first + 1)..<end].contains(dot),
            let payload = Data(base64URL: String(decoding: bytes[(first + 1)..<end], as: UTF8.self)),
            let claims = payload.withUnsafeBytes({ AccessTokenClaims.scanned(from: $0) })
        {
            return claims
        }
        return try parser.parse(bytes, as: AccessTokenClaims.self).payload
    }

    /// The same tokens making and accepting no attestations.
    public func withoutAttestations() -> AccessTokens {
        var tokens = self
        tokens.attestations = .none
        return tokens
    }

    /// The `X-Hailstorm-Verified` value for passing `token` on to `service`: its `claims` when just
    /// verified, else the ones remembered from verifying it; nil unless this is the gateway and it has them.
    public func attestation(for token: String, claims: AccessTokenClaims? = nil, to service: String) -> String? {
        if let claims { return attestations.attestation(for: token, claims: claims, to: service) }
        guard let entry = verified.entry(for: token, now: Date()) else { return nil }
        return attestation(for: token, remembered: entry, to: service)
    }

    /// The `X-Hailstorm-Verified` value for passing `token`, remembered as `entry`, on to `service`: made
    /// once per token and service.
    public func attestation(for token: String, remembered entry: VerifiedToken, to service: String) -> String? {
        entry.attestation(to: service) { attestations.attestation(for: token, claims: entry.claims, to: service) }
    }

    private static let expired = Problem(
        .unauthorized, slug: "token-expired", title: "The access token is not valid",
        detail: "The access token has expired; refresh it", headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])

    private static func invalid(_ detail: String) -> Problem {
        Problem(
            .unauthorized, slug: "invalid-token", title: "The access token is not valid", detail: detail,
            headers: [.wwwAuthenticate: "Bearer error=\"invalid_token\""])
    }

    /// The `kid` of a token whose header says ES256; nil for anything else (`none`, HS256, no kid). The
    /// algorithm is pinned here, before any key is chosen.
    static func pinnedKeyID(of token: String) -> String? {
        guard let dot = token.utf8.firstIndex(of: UInt8(ascii: ".")) else { return nil }
        return HeaderKeyIDs.shared.keyID(ofHeader: token[..<dot])
    }
}

/// Making and reading the key material of a deployment: a private key per issuer and the JWKS of their
/// public keys.
public enum TokenKeys {
    /// One public key of a JWKS document.
    public struct PublicKey: Codable, Sendable, Equatable {
        public var kty: String
        public var crv: String
        public var x: String
        public var y: String
        public var kid: String
        public var alg: String?
        public var use: String?
    }

    public struct Document: Codable, Sendable {
        public var keys: [PublicKey]
    }

    /// The issuer a key belongs to: the part of its `kid` before the last `:`.
    public static func owner(of kid: String) -> String? {
        guard let colon = kid.lastIndex(of: ":"), colon != kid.startIndex else { return nil }
        return String(kid[..<colon])
    }

    public static func parse(jwks: String) throws -> Document {
        do {
            return try JSONDecoder().decode(Document.self, from: Data(jwks.utf8))
        } catch {
            throw ConfigurationError("auth.jwks is not a JWKS document: \(error)")
        }
    }

    /// A private key from PEM or from base64url of the raw 32-byte scalar (one line, for the environment).
    public static func privateKey(_ text: String) throws -> ES256PrivateKey {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            return trimmed.hasPrefix("-----BEGIN") ? try ES256PrivateKey(pem: trimmed) : try ES256PrivateKey(key: trimmed)
        } catch {
            throw ConfigurationError("auth.signing.key is not an EC P-256 private key (PEM, or base64url of its 32 bytes)")
        }
    }

    /// The same private key for ECDH (`TokenAttestations`' pair keys).
    public static func agreementPrivateKey(_ text: String) throws -> P256.KeyAgreement.PrivateKey {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            if trimmed.hasPrefix("-----BEGIN") { return try P256.KeyAgreement.PrivateKey(pemRepresentation: trimmed) }
            guard let raw = Data(base64URL: trimmed) else { throw ConfigurationError("not base64url") }
            return try P256.KeyAgreement.PrivateKey(rawRepresentation: raw)
        } catch {
            throw ConfigurationError("auth.signing.key is not an EC P-256 private key (PEM, or base64url of its 32 bytes)")
        }
    }

    /// A JWKS entry's public key, for ECDH.
    public static func agreementPublicKey(_ key: PublicKey) throws -> P256.KeyAgreement.PublicKey {
        guard let x = Data(base64URL: key.x), let y = Data(base64URL: key.y), x.count == 32, y.count == 32 else {
            throw ConfigurationError("auth.jwks: key \(key.kid) has no P-256 point")
        }
        do {
            return try P256.KeyAgreement.PublicKey(rawRepresentation: x + y)
        } catch {
            throw ConfigurationError("auth.jwks: key \(key.kid) is not a point of P-256")
        }
    }

    /// A new private key as one line (base64url of its raw scalar).
    public static func newPrivateKey() -> String {
        Data(P256.Signing.PrivateKey().rawRepresentation).base64URLEncoded
    }

    /// The JWKS entry of `privateKey`'s public key under `kid`.
    public static func publicKey(of privateKey: String, kid: String) throws -> PublicKey {
        guard let parameters = try Self.privateKey(privateKey).parameters else {
            throw ConfigurationError("the key has no public parameters")
        }
        return PublicKey(kty: "EC", crv: "P-256", x: parameters.x, y: parameters.y, kid: kid, alg: AccessTokens.algorithm, use: "sig")
    }

    /// A JWKS document of `keys`.
    public static func jwks(_ keys: [PublicKey]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(Document(keys: keys)), as: UTF8.self)
    }

    /// A private key for each of `issuers` and the JWKS of them all, with key ids `<issuer>:<version>`.
    public static func generate(issuers: [String], version: String = "1") throws -> (privateKeys: [String: String], jwks: String) {
        var privateKeys: [String: String] = [:]
        var entries: [PublicKey] = []
        for issuer in issuers {
            let key = newPrivateKey()
            privateKeys[issuer] = key
            entries.append(try publicKey(of: key, kid: "\(issuer):\(version)"))
        }
        return (privateKeys, try jwks(entries))
    }
}

extension Data {
    /// Decodes base64url (RFC 4648 §5, padding optional); nil for anything else.
    public init?(base64URL text: some StringProtocol) {
        var base64 = Array(text.utf8)
        for index in base64.indices {
            if base64[index] == UInt8(ascii: "-") {
                base64[index] = UInt8(ascii: "+")
            } else if base64[index] == UInt8(ascii: "_") {
                base64[index] = UInt8(ascii: "/")
            }
        }
        while base64.count % 4 != 0 { base64.append(UInt8(ascii: "=")) }
        self.init(base64Encoded: Data(base64))
    }

    /// base64url without padding (RFC 4648 §5).
    public var base64URLEncoded: String {
        var text: [UInt8] = []
        withUnsafeBytes { Base64URL.append($0, to: &text) }
        return String(decoding: text, as: UTF8.self)
    }
}

/// base64url without padding (RFC 4648 §5), written directly: the gateway makes one per request it passes
/// on (`TokenAttestations`), where Foundation's base64 and three string replacements cost more than the
/// HMAC.
enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Appends the encoding of `bytes` to `out`.
    static func append(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        out.reserveCapacity(out.count + (bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let rest = bytes.count - index
            let triple = UInt32(bytes[index]) << 16 | (rest > 1 ? UInt32(bytes[index + 1]) << 8 : 0)
                | (rest > 2 ? UInt32(bytes[index + 2]) : 0)
            for position in 0..<Swift.min(4, rest + 1) {
                out.append(alphabet[Int((triple >> (18 - 6 * UInt32(position))) & 0x3f)])
            }
            index += 3
        }
    }
}

/// The pinned `kid` of each token header seen, by the header's text: all the tokens a key signs share one
/// header, so a token new to this process needs no base64 and JSON decoding to find its key (a tenth of the
/// gateway's CPU in a flash sale, where nearly every rider's token is new to it). Only the first
/// `capacity` headers are remembered; others are read each time. What is remembered is only where to look:
/// the signature, over the header as sent, is verified as before.
final class HeaderKeyIDs: Sendable {
    static let shared = HeaderKeyIDs(capacity: 64)

    private let capacity: Int
    private let known = Mutex<[Substring: String?]>([:])

    init(capacity: Int) {
        self.capacity = capacity
    }

    func keyID(ofHeader header: Substring) -> String? {
        if let known = known.withLock({ $0[header] }) { return known }
        let kid = Self.read(header)
        // A copy of the header: a slice would keep its whole token alive.
        known.withLock { if $0.count < capacity { $0[Substring(String(header))] = .some(kid) } }
        return kid
    }

    private static func read(_ header: Substring) -> String? {
        guard let header = Data(base64URL: header),
            let fields = try? JSONSerialization.jsonObject(with: header) as? [String: Any],
            fields["alg"] as? String == AccessTokens.algorithm, let kid = fields["kid"] as? String
        else { return nil }
        return kid
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
        var current: [String: VerifiedToken] = [:]
        var previous: [String: VerifiedToken] = [:]
    }
    private let capacity: Int
    private let state = Mutex(Generations())

    init(capacity: Int) {
        self.capacity = max(0, capacity)
    }

    func claims(for token: String, now: Date) -> AccessTokenClaims? {
        entry(for: token, now: now)?.claims
    }

    /// The token's entry, when it is remembered and not expired.
    func entry(for token: String, now: Date) -> VerifiedToken? {
        guard capacity > 0 else { return nil }
        let (found, dropped): (VerifiedToken?, [String: VerifiedToken]?) = state.withLock { state in
            if let entry = state.current[token] { return (entry, nil) }
            guard let entry = state.previous.removeValue(forKey: token) else { return (nil, nil) }
            return (entry, Self.insert(token, entry, into: &state, capacity: capacity))
        }
        withExtendedLifetime(dropped) {}
        guard let found, found.claims.exp.value > now else { return nil }
        return found
    }

    func remember(_ token: String, _ claims: AccessTokenClaims) {
        guard capacity > 0 else { return }
        let entry = VerifiedToken(claims: claims)
        let dropped = state.withLock { Self.insert(token, entry, into: &$0, capacity: capacity) }
        withExtendedLifetime(dropped) {}
    }

    /// Inserts the entry, turning the generations over when the current one is full; returns the
    /// generation dropped then, for the caller to free after the lock: freeing a full generation (up to
    /// `capacity` entries) under the lock held every request's look-up up behind it.
    private static func insert(
        _ token: String, _ entry: VerifiedToken, into state: inout Generations, capacity: Int
    ) -> [String: VerifiedToken]? {
        var dropped: [String: VerifiedToken]? = nil
        if state.current.count >= capacity {
            dropped = state.previous
            state.previous = state.current
            state.current = [:]
            state.current.reserveCapacity(capacity)
        }
        state.current[token] = entry
        return dropped
    }
}

/// A remembered token: its claims, and the gateway's attestations of it made so far, by callee (an
/// attestation depends only on the token, its claims and the callee, so a token's requests to one
/// service share one).
public final class VerifiedToken: Sendable {
    public let claims: AccessTokenClaims
    private let attestations = Mutex<[String: String]>([:])

    init(claims: AccessTokenClaims) {
        self.claims = claims
    }

    func attestation(to service: String, make: () -> String?) -> String? {
        if let made = attestations.withLock({ $0[service] }) { return made }
        guard let made = make() else { return nil }
        attestations.withLock { $0[service] = made }
        return made
    }
}
