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
    /// As a callee: the edge's pair keys with this service's key, each with its `<edge kid> <own kid>`
    /// (one, two during a rotation).
    private let incoming: [(pair: [UInt8], hmac: HMAC<SHA256>)]

    /// No attestations made or accepted.
    public static let none = TokenAttestations(outgoing: [:], incoming: [])

    private init(outgoing: [String: [PairKey]], incoming: [(pair: [UInt8], hmac: HMAC<SHA256>)]) {
        self.outgoing = outgoing
        self.incoming = incoming
    }

    /// The pairs of `ownKID` (the kid of `privateKey` in `document`): with every other service when it is
    /// the edge's, with the edge's keys otherwise.
    init(privateKey: P256.KeyAgreement.PrivateKey, ownKID: String, document: TokenKeys.Document) throws {
        guard let owner = TokenKeys.owner(of: ownKID) else {
            self.init(outgoing: [:], incoming: [])
            return
        }
        var outgoing: [String: [PairKey]] = [:]
        var incoming: [(pair: [UInt8], hmac: HMAC<SHA256>)] = []
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
                incoming.append((Array("\(entry.kid) \(ownKID)".utf8), HMAC(key: key)))
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
    ///
    /// Made on bytes: the gateway makes one for every request it passes on.
    public func attestation(for token: String, claims: AccessTokenClaims, to service: String) -> String? {
        guard let pairs = outgoing[service], !pairs.isEmpty, claims.iss.value == AccessTokens.userIssuer, claims.role != .service
        else { return nil }
        // Words without spaces or commas, and a session id that cannot be mistaken for "none" (`-`):
        // anything else is left to the service's full check.
        let sub = claims.sub.value, jti = claims.jti.value, sid = claims.sid ?? "-"
        guard claims.sid != "-", Self.isWord(sub), Self.isWord(jti), Self.isWord(sid) else { return nil }
        var said: [UInt8] = []
        said.reserveCapacity(32 + sub.utf8.count + jti.utf8.count + sid.utf8.count)
        said.append(contentsOf: String(Int(saturating: claims.exp.value.timeIntervalSince1970)).utf8)
        for field in [claims.role.rawValue, sub, jti, sid] {
            said.append(UInt8(ascii: " "))
            said.append(contentsOf: field.utf8)
        }
        var token = token
        return token.withUTF8 { token -> String? in
            guard let signature = Self.signature(of: token) else { return nil }
            var value: [UInt8] = []
            value.reserveCapacity(pairs.count * (said.count + 96))
            for pair in pairs {
                if !value.isEmpty { value.append(contentsOf: ", ".utf8) }
                value.append(contentsOf: pair.prefix.utf8)
                said.withUnsafeBufferPointer { said in
                    Self.appendMAC(of: said, signature, pair.hmac, to: &value)
                }
                value.append(UInt8(ascii: " "))
                value.append(contentsOf: said)
            }
            return String(decoding: value, as: UTF8.self)
        }
    }

    /// The claims `header` attests for `token` when an attestation in it is for this service and checks
    /// out; nil otherwise (then verify the token). Expiry is the caller's to check.
    ///
    /// Read on bytes: a service behind the gateway reads one with nearly every request.
    public func claims(in header: String, for token: String) -> AccessTokenClaims? {
        guard !incoming.isEmpty else { return nil }
        var header = header
        var token = token
        return header.withUTF8 { header in
            token.withUTF8 { token in
                guard let signature = Self.signature(of: token) else { return nil }
                var start = 0
                while start < header.count {
                    let end = header[start...].firstIndex(of: UInt8(ascii: ",")) ?? header.count
                    var entry = UnsafeBufferPointer(rebasing: header[start..<end])
                    while entry.first == UInt8(ascii: " ") { entry = UnsafeBufferPointer(rebasing: entry.dropFirst()) }
                    if let checked = check(entry, signature: signature) { return checked }
                    start = end + 1
                }
                return nil
            }
        }
    }

    /// The claims of one attestation, `<edge kid> <callee kid> <mac> <said>`: nil when it is not for this
    /// service, or for a key it does not hold (the next one may be); nil, too, when its MAC does not match.
    private func check(_ entry: UnsafeBufferPointer<UInt8>, signature: UnsafeBufferPointer<UInt8>) -> AccessTokenClaims? {
        let words = Self.words(entry, count: 4)
        guard words.count == 4 else { return nil }
        let pair = UnsafeBufferPointer(rebasing: entry[words[0].lowerBound..<words[1].upperBound])
        guard let key = incoming.first(where: { $0.pair.elementsEqual(pair) })?.hmac else { return nil }
        let said = UnsafeBufferPointer(rebasing: entry[words[3]])
        var expected: [UInt8] = []
        expected.reserveCapacity(44)
        Self.appendMAC(of: said, signature, key, to: &expected)
        // Compared every byte: the time taken says nothing of where they differ.
        let mac = entry[words[2]]
        guard mac.count == expected.count else { return nil }
        var difference: UInt8 = 0
        for (a, b) in zip(mac, expected) { difference |= a ^ b }
        guard difference == 0 else { return nil }
        let fields = Self.words(said, count: 6)
        guard fields.count == 5, let exp = Int(Self.text(said, fields[0])),
            let role = Role(rawValue: Self.text(said, fields[1])), role != .service
        else { return nil }
        let sid = Self.text(said, fields[4])
        return AccessTokenClaims(
            userID: Self.text(said, fields[2]), role: role, tokenID: Self.text(said, fields[3]), issuedAt: Date(),
            expiresAt: Date(timeIntervalSince1970: Double(exp)), sessionID: sid == "-" ? nil : sid)
    }

    /// The ranges of the space-separated words of `bytes`, at most `count`: the last runs to the end.
    private static func words(_ bytes: UnsafeBufferPointer<UInt8>, count: Int) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0
        while start <= bytes.count, ranges.count < count {
            if ranges.count == count - 1 {
                ranges.append(start..<bytes.count)
                break
            }
            let end = bytes[start...].firstIndex(of: UInt8(ascii: " ")) ?? bytes.count
            ranges.append(start..<end)
            start = end + 1
        }
        // An empty word (two spaces, a trailing space) is not an attestation.
        return ranges.contains(where: \.isEmpty) ? [] : ranges
    }

    private static func text(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    private static func isWord(_ text: String) -> Bool {
        !text.isEmpty && !text.utf8.contains(where: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: ",") })
    }

    /// The token's signature: what follows its last dot.
    private static func signature(of token: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8>? {
        guard let dot = token.lastIndex(of: UInt8(ascii: ".")) else { return nil }
        return UnsafeBufferPointer(rebasing: token[(dot + 1)...])
    }

    /// Appends the base64url MAC of `said`, a space and `signature` under `keyed`.
    private static func appendMAC(
        of said: UnsafeBufferPointer<UInt8>, _ signature: UnsafeBufferPointer<UInt8>, _ keyed: HMAC<SHA256>, to out: inout [UInt8]
    ) {
        var hmac = keyed
        hmac.update(data: UnsafeRawBufferPointer(said))
        withUnsafeBytes(of: UInt8(ascii: " ")) { hmac.update(data: $0) }
        hmac.update(data: UnsafeRawBufferPointer(signature))
        hmac.finalize().withUnsafeBytes { Base64URL.append($0, to: &out) }
    }
}

