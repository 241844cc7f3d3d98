import Contracts
import Foundation
@testable import HailKit
import HailKitTesting
import Testing

/// Who can sign what: login alone signs users' tokens; a service signs only its own credential for one
/// callee; nothing signed otherwise (HMAC, `none`, an unknown key, a key of another issuer) passes.
@Suite("access tokens: keys, issuers, audiences, rotation")
struct AccessTokensTests {
    static func base64URL(_ text: String) -> String {
        Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A token with the given header and claims, its signature made of `signature`.
    static func handMade(header: String, claims: String, signature: String = "") -> String {
        base64URL(header) + "." + base64URL(claims) + "." + signature
    }

    static func claims(role: String = "admin", iss: String = "login", aud: String = "hailstorm") -> String {
        let exp = Int(Date().timeIntervalSince1970) + 600
        return #"{"sub":"u1","role":"\#(role)","jti":"j1","iat":1,"exp":\#(exp),"iss":"\#(iss)","aud":["\#(aud)"]}"#
    }

    func expectRefused(_ token: String, by tokens: AccessTokens, _ comment: Comment) {
        do {
            _ = try tokens.verify(token)
            Issue.record(comment)
        } catch let problem as Problem {
            #expect(problem.status == .unauthorized, comment)
        } catch {
            Issue.record("\(comment): \(error)")
        }
    }

    @Test("a user's token signed by login passes; alg none, HS256 with the old shared key, a forged key are refused")
    func onlyLoginsKey() async throws {
        let verifier = try await AccessTokens(service: "order", signingKey: TestKeys.privateKey("order"), jwks: TestKeys.jwks, cacheSize: 0)
        let good = try await TestKeys.userToken("u1", role: .rider)
        #expect(try verifier.verify(good).sub.value == "u1")

        expectRefused(Self.handMade(header: #"{"alg":"none","typ":"JWT"}"#, claims: Self.claims()), by: verifier, "alg none")
        expectRefused(
            Self.handMade(header: #"{"alg":"none","kid":"login:1"}"#, claims: Self.claims()), by: verifier, "alg none with login's kid")
        // The HMAC scheme Hailstorm used before: HS256 over the payload with the old development key.
        let hmac = Self.handMade(header: #"{"alg":"HS256","typ":"JWT","kid":"login:1"}"#, claims: Self.claims(), signature: "c2lnbmF0dXJl")
        expectRefused(hmac, by: verifier, "HS256")
        let stranger = try TokenKeys.generate(issuers: ["login"])
        let forger = try await AccessTokens(service: "x", signingKey: stranger.privateKeys["login"], jwks: stranger.jwks, cacheSize: 0)
        let forged = try await forger.sign(AccessTokenClaims(
            userID: "u1", role: .admin, tokenID: "f", issuedAt: Date(), expiresAt: Date() + 600))
        expectRefused(forged, by: verifier, "a key the JWKS does not hold, under login's kid")
    }

    @Test("a service holds no key that makes a user's token")
    func servicesCannotMintUsers() async throws {
        let order = try await AccessTokens(service: "order", signingKey: TestKeys.privateKey("order"), jwks: TestKeys.jwks, cacheSize: 0)
        // Signing as login with order's key is refused outright…
        await #expect(throws: ConfigurationError.self) {
            _ = try await order.sign(AccessTokenClaims(userID: "u1", role: .admin, tokenID: "a", issuedAt: Date(), expiresAt: Date() + 600))
        }
        // …and what order can sign, an admin in its own name, no one accepts.
        let ownName = try await order.sign(AccessTokenClaims(
            userID: "u1", role: .admin, tokenID: "b", issuedAt: Date(), expiresAt: Date() + 600, issuer: "order"))
        let gateway = try await AccessTokens(service: "gateway", signingKey: nil, jwks: TestKeys.jwks, cacheSize: 0)
        expectRefused(ownName, by: gateway, "an admin token signed by order")
    }

    @Test("a service credential names its callee: accepted there, refused anywhere else")
    func audience() async throws {
        let matching = try await AccessTokens(service: "matching", signingKey: TestKeys.privateKey("matching"), jwks: TestKeys.jwks, cacheSize: 0)
        let forOrder = try await matching.serviceToken(for: "order", lifetime: 300)
        let order = try await AccessTokens(service: "order", signingKey: nil, jwks: TestKeys.jwks, cacheSize: 0)
        let coupon = try await AccessTokens(service: "coupon", signingKey: nil, jwks: TestKeys.jwks, cacheSize: 0)
        let claims = try order.verify(forOrder)
        #expect(claims.role == .service && claims.sub.value == "matching")
        expectRefused(forOrder, by: coupon, "a credential for order, shown to coupon")
        let expired = try await matching.serviceToken(for: "order", lifetime: -10)
        expectRefused(expired, by: order, "an expired credential")
    }

    @Test("rotation: both kids pass during the overlap, only the new one after")
    func rotation() async throws {
        let old = TokenKeys.newPrivateKey()
        let new = TokenKeys.newPrivateKey()
        let oldEntry = try TokenKeys.publicKey(of: old, kid: "login:1")
        let newEntry = try TokenKeys.publicKey(of: new, kid: "login:2")
        let overlap = try TokenKeys.jwks([oldEntry, newEntry])
        let after = try TokenKeys.jwks([newEntry])
        func token(_ key: String) async throws -> String {
            let signer = try await AccessTokens(service: "login", signingKey: key, jwks: overlap, cacheSize: 0)
            return try await signer.sign(AccessTokenClaims(userID: "u1", role: .rider, tokenID: RandomID.uuid(), issuedAt: Date(), expiresAt: Date() + 600))
        }
        let byOld = try await token(old)
        let byNew = try await token(new)
        let during = try await AccessTokens(service: "gateway", signingKey: nil, jwks: overlap, cacheSize: 0)
        #expect(try during.verify(byOld).sub.value == "u1")
        #expect(try during.verify(byNew).sub.value == "u1")
        let later = try await AccessTokens(service: "gateway", signingKey: nil, jwks: after, cacheSize: 0)
        #expect(try later.verify(byNew).sub.value == "u1")
        expectRefused(byOld, by: later, "the retired kid")
    }

    @Test("a JWKS that is not one, or a signing key it does not list, stops the service at start")
    func configuration() async throws {
        await #expect(throws: ConfigurationError.self) {
            _ = try await AccessTokens(service: "order", signingKey: nil, jwks: "{}", cacheSize: 0)
        }
        await #expect(throws: ConfigurationError.self) {
            _ = try await AccessTokens(service: "order", signingKey: TokenKeys.newPrivateKey(), jwks: TestKeys.jwks, cacheSize: 0)
        }
        await #expect(throws: ConfigurationError.self) {
            _ = try await AccessTokens(service: "order", signingKey: "not a key", jwks: TestKeys.jwks, cacheSize: 0)
        }
    }

    @Test("the gateway's attestation stands in for the token at its one callee; forged, misdirected, altered or expired do not pass")
    func attestations() async throws {
        func verifier(_ service: String, key: String? = nil, jwks: String = TestKeys.jwks) async throws -> AccessTokens {
            try await AccessTokens(service: service, signingKey: key ?? TestKeys.privateKey(service), jwks: jwks, cacheSize: 0)
        }
        let gateway = try await verifier("gateway")
        let coupon = try await verifier("coupon")
        let order = try await verifier("order")
        let token = try await TestKeys.userToken("u1", role: .rider, session: "s1")
        let claims = try gateway.verify(token)
        // The token with another token's signature: only an attestation can let it through.
        let other = try await TestKeys.userToken("u2", role: .rider)
        let unsigned = String(token[..<token.lastIndex(of: ".")!]) + String(other[other.lastIndex(of: ".")!...])
        expectRefused(unsigned, by: coupon, "a signature that is not the token's, without an attestation")

        let forCoupon = try #require(gateway.attestation(for: unsigned, claims: claims, to: "coupon"))
        let attested = try coupon.verify(unsigned, attestation: forCoupon)
        #expect(attested.identity == claims.identity)
        #expect(abs(attested.exp.value.timeIntervalSince(claims.exp.value)) < 1)

        func expectAttestedRefused(_ token: String, attestation: String?, by tokens: AccessTokens, _ comment: Comment) {
            #expect(throws: Problem.self, comment) { _ = try tokens.verify(token, attestation: attestation) }
        }
        expectAttestedRefused(unsigned, attestation: forCoupon, by: order, "coupon's attestation shown to order")
        expectAttestedRefused(
            unsigned, attestation: gateway.attestation(for: unsigned, claims: claims, to: "order"), by: coupon, "order's shown to coupon")
        #expect(order.attestation(for: unsigned, claims: claims, to: "coupon") == nil, "only the gateway attests")
        let randomMAC = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let said = forCoupon.split(separator: " ", maxSplits: 3)[3]
        expectAttestedRefused(unsigned, attestation: "gateway:1 coupon:1 \(randomMAC) \(said)", by: coupon, "a forged attestation")
        // Its words changed (an admin, another user): the MAC covers them.
        for changed in [said.replacingOccurrences(of: " rider ", with: " admin "), said.replacingOccurrences(of: " u1 ", with: " u2 ")] {
            #expect(changed != String(said))
            let altered = forCoupon.replacingOccurrences(of: String(said), with: changed)
            expectAttestedRefused(unsigned, attestation: altered, by: coupon, "an attestation whose claims were changed")
        }
        // Shown with another token: it names the token it was made for.
        expectAttestedRefused(other + "x", attestation: forCoupon, by: coupon, "another token under this attestation")
        // A service credential is not attested; an expired token is refused however attested.
        let credential = try await verifier("matching").serviceToken(for: "gateway", lifetime: 300)
        #expect(gateway.attestation(for: credential, claims: try gateway.verify(credential), to: "coupon") == nil)
        let expired = try await TestKeys.userToken("u1", role: .rider, lifetime: -10)
        let expiredClaims = AccessTokenClaims(userID: "u1", role: .rider, tokenID: "e", issuedAt: Date() - 100, expiresAt: Date() - 10)
        do {
            _ = try coupon.verify(expired, attestation: gateway.attestation(for: expired, claims: expiredClaims, to: "coupon"))
            Issue.record("an expired token with an attestation passed")
        } catch let problem as Problem {
            #expect(problem.slug == "token-expired")
        }

        // During a rotation of coupon's key the gateway attests for both of coupon's keys.
        let next = TokenKeys.newPrivateKey()
        var document = try TokenKeys.parse(jwks: TestKeys.jwks)
        document.keys.append(try TokenKeys.publicKey(of: next, kid: "coupon:2"))
        let rotating = try TokenKeys.jwks(document.keys)
        let header = try #require(try await verifier("gateway", jwks: rotating).attestation(for: unsigned, claims: claims, to: "coupon"))
        #expect(header.split(separator: ",").count == 2)
        #expect(try await verifier("coupon", jwks: rotating).verify(unsigned, attestation: header).sub.value == "u1")
        #expect(try await verifier("coupon", key: next, jwks: rotating).verify(unsigned, attestation: header).sub.value == "u1")
    }

    @Test("a remembered token's attestations are made once per callee and each holds only at its own callee")
    func rememberedAttestations() async throws {
        func verifier(_ service: String, cacheSize: Int) async throws -> AccessTokens {
            try await AccessTokens(service: service, signingKey: TestKeys.privateKey(service), jwks: TestKeys.jwks, cacheSize: cacheSize)
        }
        let gateway = try await verifier("gateway", cacheSize: 100)
        let coupon = try await verifier("coupon", cacheSize: 0)
        let order = try await verifier("order", cacheSize: 0)
        let token = try await TestKeys.userToken("u7", role: .rider, session: "s7")
        #expect(gateway.remembered(token) == nil, "not verified yet")
        #expect(gateway.attestation(for: token, to: "coupon") == nil, "nothing to attest before verifying")
        let claims = try gateway.verify(token)
        let remembered = try #require(gateway.remembered(token))
        #expect(remembered.claims == claims)

        let forCoupon = try #require(gateway.attestation(for: token, remembered: remembered, to: "coupon"))
        let forOrder = try #require(gateway.attestation(for: token, to: "order"))
        #expect(forCoupon != forOrder)
        // Asked again, the same words, and the same as one made afresh from the claims.
        #expect(gateway.attestation(for: token, to: "coupon") == forCoupon)
        #expect(gateway.attestation(for: token, claims: claims, to: "coupon") == forCoupon)
        #expect(try coupon.verify(token, attestation: forCoupon).identity == claims.identity)
        #expect(try order.verify(token, attestation: forOrder).identity == claims.identity)
        // Each attests for its own callee only: shown to the other, the token is checked in full, so a
        // token with another's signature under it is refused.
        let other = try await TestKeys.userToken("u8", role: .rider)
        let unsigned = String(token[..<token.lastIndex(of: ".")!]) + String(other[other.lastIndex(of: ".")!...])
        let unsignedForCoupon = try #require(gateway.attestation(for: unsigned, claims: claims, to: "coupon"))
        #expect(throws: Problem.self) { _ = try order.verify(unsigned, attestation: unsignedForCoupon) }
        #expect(try coupon.verify(unsigned, attestation: unsignedForCoupon).sub.value == "u7")
        // The entry's attestation is for its own token: the same claims under another token do not match it.
        #expect(throws: Problem.self) { _ = try coupon.verify(unsigned, attestation: forCoupon) }
    }

    @Test("claims are read off the token's bytes as the decoder reads them; any other payload goes to the decoder and means the same")
    func claimsReadAsTheDecoderReadsThem() async throws {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        func payload(of token: String) throws -> Data {
            let parts = token.split(separator: ".", omittingEmptySubsequences: false)
            return try #require(Data(base64URL: parts[1]))
        }
        // What Hailstorm's signers write: users' tokens with and without a session, service credentials.
        var tokens = [
            try await TestKeys.userToken("u1", role: .rider),
            try await TestKeys.userToken("driver-7", role: .driver, session: "s-1"),
            try await TestKeys.userToken("ops", role: .admin, session: "fam_2"),
        ]
        let order = try await AccessTokens(service: "order", signingKey: TestKeys.privateKey("order"), jwks: TestKeys.jwks)
        tokens.append(try await order.serviceToken(for: "payment", lifetime: 60))
        for token in tokens {
            let bytes = Array(token.utf8)
            let end = try #require(bytes.lastIndex(of: UInt8(ascii: ".")))
            let scanned = try #require(try payload(of: token).withUnsafeBytes { AccessTokenClaims.scanned(from: $0) }, "read on its own: \(token)")
            #expect(try AccessTokens.claims(of: bytes, signedUpTo: end) == scanned)
            #expect(scanned == (try decoder.decode(AccessTokenClaims.self, from: payload(of: token))))
        }
        // Plain payloads of every shape the claims take, read both ways.
        let plain = [
            #"{"sub":"u1","role":"rider","jti":"j1","iat":1,"exp":1796629962.5,"iss":"login","aud":["hailstorm"]}"#,
            #"{"aud":"hailstorm","exp":2e9,"iat":0,"iss":"login","jti":"j","role":"driver","sid":null,"sub":"d"}"#,
            #" { "aud" : [ "a" , "b" ] , "exp" : 1 , "iat" : -1.25 , "iss" : "x" , "jti" : "" , "role" : "admin" , "sid" : "s" , "sub" : "ü" } "#,
        ]
        for text in plain {
            let scanned = try #require(Data(text.utf8).withUnsafeBytes { AccessTokenClaims.scanned(from: $0) }, "\(text)")
            #expect(scanned == (try decoder.decode(AccessTokenClaims.self, from: Data(text.utf8))), "\(text)")
        }
        // Anything else is the decoder's: it reads or refuses it as it did.
        let left = [
            #"{"sub":"u1","role":"rider","jti":"j1","iat":1,"exp":2e9,"iss":"login","aud":"hailstorm","nbf":1}"#,
            #"{"sub":"u\u0031","role":"rider","jti":"j1","iat":1,"exp":2e9,"iss":"login","aud":"hailstorm"}"#,
            #"{"sub":"u1","sub":"u2","role":"rider","jti":"j1","iat":1,"exp":2e9,"iss":"login","aud":"hailstorm"}"#,
            #"{"sub":"u1","role":"pilot","jti":"j1","iat":1,"exp":2e9,"iss":"login","aud":"hailstorm"}"#,
            #"{"sub":"u1","role":"rider","jti":"j1","iat":1,"iss":"login","aud":"hailstorm"}"#,
            #"{"sub":"u1","role":"rider","jti":"j1","iat":1,"exp":"2e9","iss":"login","aud":"hailstorm"}"#,
            #"{"sub":"u1","role":"rider","jti":"j1","iat":1,"exp":2e9,"iss":"login","aud":7}"#,
            #"{"sub":"u1","role":"rider","jti":"j1","iat":1,"exp":2e9,"iss":"login","aud":"hailstorm"} x"#,
            #"[]"#, "",
        ]
        for text in left {
            #expect(Data(text.utf8).withUnsafeBytes { AccessTokenClaims.scanned(from: $0) } == nil, "\(text)")
        }
        #expect((try? decoder.decode(AccessTokenClaims.self, from: Data(left[0].utf8)))?.sub.value == "u1", "an extra claim is read by the decoder")
        #expect((try? decoder.decode(AccessTokenClaims.self, from: Data(left[1].utf8)))?.sub.value == "u1", "an escape is read by the decoder")
        #expect((try? decoder.decode(AccessTokenClaims.self, from: Data(left[3].utf8))) == nil, "an unknown role is refused")
        #expect((try? decoder.decode(AccessTokenClaims.self, from: Data(left[4].utf8))) == nil, "a missing expiry is refused")
        // A token whose payload is not three parts' middle goes to jwt-kit's parser, which refuses it.
        let good = tokens[0]
        let fourParts = Array((good + ".x").utf8)
        #expect(throws: (any Error).self) { _ = try AccessTokens.claims(of: fourParts, signedUpTo: fourParts.lastIndex(of: UInt8(ascii: "."))!) }
    }

    @Test("a verifier remembers the tokens in use and forgets the ones unused longest")
    func rememberedTokensAgeOut() async throws {
        let gateway = try await AccessTokens(service: "gateway", signingKey: nil, jwks: TestKeys.jwks, cacheSize: 2)
        var tokens: [String] = []
        for index in 1...4 { tokens.append(try await TestKeys.userToken("u\(index)", role: .rider)) }
        for token in tokens.prefix(3) { _ = try gateway.verify(token) }
        // u1's entry has aged into the older generation; using it brings it back.
        #expect(gateway.remembered(tokens[0])?.claims.sub.value == "u1")
        _ = try gateway.verify(tokens[3])
        #expect(gateway.remembered(tokens[1]) == nil, "u2, unused since it was verified, is forgotten")
        for (index, token) in tokens.enumerated() where index != 1 {
            #expect(gateway.remembered(token)?.claims.sub.value == "u\(index + 1)")
        }
        // Forgotten is not refused: verified again, it is remembered again.
        #expect(try gateway.verify(tokens[1]).sub.value == "u2")
        #expect(gateway.remembered(tokens[1]) != nil)
    }
}

