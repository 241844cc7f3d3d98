import Contracts
import Foundation
import HailKit
import HailKitTesting
import Testing

/// Sessions and tokens across the whole platform, each service reached directly as well as through the
/// gateway: a token that is not valid there, or whose session ended, opens nothing anywhere.
@Suite("sessions and tokens on every service", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .serialized, .timeLimit(.minutes(5)))
struct SessionSecurityTests {
    /// One authenticated route per service, as a rider may call it (an answer other than 401 means the
    /// token was accepted; the route may still refuse the rider).
    static func probes(_ platform: Platform, user: String) -> [(service: String, url: String)] {
        [
            ("gateway", platform.api + "/me"),
            ("login", platform.login.baseURL + "/v1/users/\(user)"),
            ("order", platform.order.baseURL + "/v1/orders"),
            ("matching", platform.matching.baseURL + "/v1/stats"),
            ("order-grab", platform.grab.baseURL + "/v1/offers/none/audit"),
            ("coupon", platform.coupon!.baseURL + "/v1/wallet"),
            ("payment", platform.payment!.baseURL + "/v1/payments/none"),
            ("settlement", platform.settlement!.baseURL + "/v1/batches"),
        ]
    }

    func statuses(_ platform: Platform, user: String, token: String) async throws -> [String: Int] {
        var answers: [String: Int] = [:]
        for (service, url) in Self.probes(platform, user: user) {
            answers[service] = try await testRequest(.GET, url, headers: ["Authorization": "Bearer \(token)"]).status
        }
        return answers
    }

    /// Signs up a rider and signs in: id, access token, refresh token.
    func session(_ platform: Platform, phone: String) async throws -> (id: String, access: String, refresh: String) {
        let signIn = try await platform.send(.POST, "/auth/login", body: ["phone": phone, "password": "pass-word-1"])
        try #require(signIn.status == 200, "\(signIn.text)")
        let user = try #require(signIn.json["user"] as? [String: Any])
        return (
            try #require(user["id"] as? String), try #require(signIn.json["accessToken"] as? String),
            try #require(signIn.json["refreshToken"] as? String)
        )
    }

    @Test("after sign-out, and after a refresh token is reused, the session's tokens are refused everywhere and its WebSocket closes")
    func sessionsEndEverywhere() async throws {
        let platform = try Platform(money: true)
        defer { platform.stopAll() }
        try await platform.start()
        let phone = "+49" + String(Int.random(in: 1_000_000_000...9_999_999_999))
        let signUp = try await platform.send(
            .POST, "/auth/signup", body: ["role": "rider", "phone": phone, "password": "pass-word-1", "name": "Sam"])
        try #require(signUp.status == 201, "\(signUp.text)")

        // Sign-out.
        let first = try await session(platform, phone: phone)
        let before = try await statuses(platform, user: first.id, token: first.access)
        #expect(before.values.allSatisfy { $0 != 401 }, "a fresh token was refused: \(before)")
        let socket = try await PushInbox.connect(platform, token: first.access)
        let signedOut = ContinuousClock.now
        let logout = try await platform.send(.POST, "/auth/logout", token: first.access, body: ["refreshToken": first.refresh])
        #expect(logout.status == 204)
        #expect(try await socket.waitUntilClosed(timeout: .seconds(2)) == 4401)
        #expect(ContinuousClock.now - signedOut < .seconds(2))
        let after = try await statuses(platform, user: first.id, token: first.access)
        #expect(after.values.allSatisfy { $0 == 401 }, "a signed-out token still opened something: \(after)")

        // A refresh token used twice ends its session: the access tokens of both rounds stop working.
        let second = try await session(platform, phone: phone)
        let rotated = try await platform.send(.POST, "/auth/refresh", body: ["refreshToken": second.refresh])
        try #require(rotated.status == 200, "\(rotated.text)")
        let rotatedAccess = try #require(rotated.json["accessToken"] as? String)
        let secondSocket = try await PushInbox.connect(platform, token: rotatedAccess)
        let reuse = try await platform.send(.POST, "/auth/refresh", body: ["refreshToken": second.refresh])
        #expect(reuse.status == 401)
        #expect(try await secondSocket.waitUntilClosed(timeout: .seconds(2)) == 4401)
        for token in [second.access, rotatedAccess] {
            let refused = try await statuses(platform, user: second.id, token: token)
            #expect(refused.values.allSatisfy { $0 == 401 }, "a token of a reused session still opened something: \(refused)")
        }
        // Another session of the same rider is untouched.
        let third = try await session(platform, phone: phone)
        let fine = try await statuses(platform, user: third.id, token: third.access)
        #expect(fine.values.allSatisfy { $0 != 401 }, "\(fine)")
    }

    @Test("tokens from no key of the platform, for another service, or expired are 401 at the gateway and at every service")
    func foreignTokens() async throws {
        let platform = try Platform(money: true)
        defer { platform.stopAll() }
        try await platform.start()
        let rider = try await platform.account("rider")
        let now = Date()
        let stranger = try TokenKeys.generate(issuers: ["login"])
        let forger = try await AccessTokens(service: "x", signingKey: stranger.privateKeys["login"], jwks: stranger.jwks, cacheSize: 0)
        let matching = try await TestKeys.tokens(as: "matching")
        let header = Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
        let body = Data(#"{"sub":"\#(rider.id)","role":"admin","jti":"n","iat":1,"exp":\#(Int(now.timeIntervalSince1970) + 600),"iss":"login","aud":["hailstorm"]}"#.utf8)
            .base64EncodedString().replacingOccurrences(of: "=", with: "")
        let bad: [(String, String)] = [
            ("alg none", header + "." + body + "."),
            ("a key the platform does not hold", try await forger.sign(AccessTokenClaims(
                userID: rider.id, role: .admin, tokenID: "f", issuedAt: now, expiresAt: now + 600))),
            ("matching's credential for the payment service", try await matching.serviceToken(for: "payment", lifetime: 300)),
            ("expired", try await TestKeys.userToken(rider.id, role: .rider, lifetime: -60)),
        ]
        for (name, token) in bad {
            var answers = try await statuses(platform, user: rider.id, token: token)
            // A credential for payment is payment's to accept; everyone else refuses it.
            if name.hasPrefix("matching's") { answers["payment"] = nil }
            #expect(answers.values.allSatisfy { $0 == 401 }, "\(name): \(answers)")
        }
    }
}
