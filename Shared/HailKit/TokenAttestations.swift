import Contracts
import Crypto
import Foundation

/// The gateway's word, to the one service it calls, that it has verified a user's token, and what it says.
///
/// Every request from an app reaches a service through the gateway, which has just verified the caller's
/// ES256 token. Checking it again in the service cost that service a fifth of its work per request in a
/// flash sale, where each rider's token is new to it: not the P-256 check, which is quick, but decoding the
/// token's header and claims through JSONDecoder. With the token the gateway now sends
///
///     X-Hailstorm-Verified: <gateway kid> <callee kid> <mac> <exp> <role> <sub> <jti> <sid or ->
///
/// the claims a service needs, in plain words, and an HMAC-SHA256 of them and the token's signature under a
/// key that only the gateway and that callee can compute. The service checks the HMAC (a few microseconds),
/// takes the claims from the header, checks the expiry and then the deny-list as before.
///
/// The key of a pair is HKDF-SHA256 of the ECDH secret of the gateway's and the callee's P-256 keys, the
/// keys they already hold to sign service credentials (`auth.signing.key`), with both kids as context: no
/// new secret to deploy or rotate. Another service, even a compromised one, cannot compute a pair it is
/// not in. An attestation names the token it was made for (its signature) and is worth nothing without
/// it, and the token alone is accepted anyway: it adds no way in, only a cheaper check. Only users' tokens
/// signed by login are attested. One that does not check out (another pair, a key being rotated, a
/// forgery) is ignored and the token is verified in full.
public struct TokenAttestations: Sendable {
    /// The issuer whose attestations services accept: the edge.
    public static let edgeIssuer = "gateway"

    struct PairKey: Sendable {
        /// `<edge kid> <callee kid> `, the start of the attestation.
        var prefix: String
        /// An HMAC keyed with the pair's key and nothing hashed yet: copied for each MAC, which spares
        /// hashing the key again every time.
        var hmac: HMAC<SHA256>
    }

    /// As the edge: for each service, a key per key of that service in the JWKS (two during a rotation).
    private let outgoing: [String: [PairKey]]
    /// As a callee: the edge's pair keys with this service's key, by `<edge kid> <own kid>`.
    private let incoming: [Substring: HMAC<SHA256>]

    /// No attestations made or accepted.
    public static let none = TokenAttestations(outgoing: [:], incoming: [:])

    private init(outgoing: [String: [PairKey]], incoming: [Substring: HMAC<SHA256>]) {
        self.outgoing = outgoing
        self.incoming = incoming
    }

    /// The pairs of `ownKID` (the kid of `privateKey` in `document`): with every other service when it is
    /// the edge's, with the edge's keys otherwise.
    init(privateKey: P256.KeyAgreement.PrivateKey, ownKID: String, document: TokenKeys.Document) throws {
        guard let owner = TokenKeys.owner(of: ownKID) else {
            self.init(outgoing: [:], incoming: [:])
            return
        }
        var outgoing: [String: [PairKey]] = [:]
        var incoming: [Substring: HMAC<SHA256>] = [:]
        for entry in document.keys {
            guard let peerOwner = TokenKeys.owner(of: entry.kid), peerOwner != owner, peerOwner != AccessTokens.userIssuer,
                owner == Self.edgeIssuer || peerOwner == Self.edgeIssuer
            else { continue }
            let peer = try TokenKeys.agreementPublicKey(entry)
            if owner == Self.edgeIssuer {
                let key = try Self.pairKey(privateKey, peer, edgeKID: ownKID, calleeKID: entry.kid)
                outgoing[peerOwner, default: []].append(PairKey(prefix: "\(ownKID) \(entry.kid) ", hmac: HMAC(key: key)))
            } else {
                let key = try Self.pairKey(privateKey, peer, edgeKID: entry.kid, calleeKID: ownKID)
                incoming[Substring("\(entry.kid) \(ownKID)")] = HMAC(key: key)
            }
        }
        self.init(outgoing: outgoing, incoming: incoming)
    }

    static func pairKey(
        _ own: P256.KeyAgreement.PrivateKey, _ peer: P256.KeyAgreement.PublicKey, edgeKID: String, calleeKID: String
    ) throws -> SymmetricKey {
        try own.sharedSecretFromKeyAgreement(with: peer).hkdfDerivedSymmetricKey(
            using: SHA256.self, salt: Data("hailstorm verified token v1".utf8), sharedInfo: Data("\(edgeKID) \(calleeKID)".utf8),
            outputByteCount: 32)
    }

    /// The `X-Hailstorm-Verified` value for sending `token`, verified here with `claims`, to `service`; nil
    /// when this is not the edge, `service` has no key, or the token is not a user's.
    public func attestation(for token: String, claims: AccessTokenClaims, to service: String) -> String? {
        guard let pairs = outgoing[service], !pairs.isEmpty, claims.iss.value == AccessTokens.userIssuer, claims.role != .service,
            let signature = Self.signature(of: token)
        else { return nil }
        // Words without spaces or commas, and a session id that cannot be mistaken for "none" (`-`):
        // anything else is left to the service's full check.
        let fields = [claims.sub.value, claims.jti.value, claims.sid ?? "-"]
        guard claims.sid != "-", fields.allSatisfy({ !$0.isEmpty && !$0.contains(where: { $0 == " " || $0 == "," }) }) else {
            return nil
        }
        let said = "\(Int(saturating: claims.exp.value.timeIntervalSince1970)) \(claims.role.rawValue) \(fields.joined(separator: " "))"
        var value = ""
        for pair in pairs {
            if !value.isEmpty { value += ", " }
            value += pair.prefix
            value += Data(Self.mac(said, signature, pair.hmac)).base64URLEncoded
            value += " "
            value += said
        }
        return value
    }

    /// The claims `header` attests for `token` when an attestation in it is for this service and checks
    /// out; nil otherwise (then verify the token). Expiry is the caller's to check.
    public func claims(in header: String, for token: String) -> AccessTokenClaims? {
        guard !incoming.isEmpty, let signature = Self.signature(of: token) else { return nil }
        for entry in header.split(separator: ",") {
            let parts = entry.split(separator: " ", maxSplits: 3)
            guard parts.count == 4, let key = incoming[entry[parts[0].startIndex..<parts[1].endIndex]] else { continue }
            let said = parts[3]
            // Compared as text, every byte: the time taken says nothing of where they differ.
            let expected = Data(Self.mac(said, signature, key)).base64URLEncoded.utf8
            guard parts[2].utf8.count == expected.count else { return nil }
            var difference: UInt8 = 0
            for (a, b) in zip(parts[2].utf8, expected) { difference |= a ^ b }
            guard difference == 0 else { return nil }
            let fields = said.split(separator: " ")
            guard fields.count == 5, let exp = Int(fields[0]), let role = Role(rawValue: String(fields[1])), role != .service else {
                return nil
            }
            let now = Date()
            return AccessTokenClaims(
                userID: String(fields[2]), role: role, tokenID: String(fields[3]), issuedAt: now,
                expiresAt: Date(timeIntervalSince1970: Double(exp)), sessionID: fields[4] == "-" ? nil : String(fields[4]))
        }
        return nil
    }

    private static func signature(of token: String) -> Substring.UTF8View? {
        guard let dot = token.utf8.lastIndex(of: UInt8(ascii: ".")) else { return nil }
        return token.utf8[token.utf8.index(after: dot)...]
    }

    private static func mac(_ said: some StringProtocol, _ signature: Substring.UTF8View, _ keyed: HMAC<SHA256>) -> HashedAuthenticationCode<SHA256> {
        var hmac = keyed
        hmac.update(data: Array(said.utf8))
        hmac.update(data: [UInt8(ascii: " ")])
        hmac.update(data: Array(signature))
        return hmac.finalize()
    }
}
