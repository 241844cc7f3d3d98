import Configuration
import Contracts
import Foundation
import HailKit
import HailKitTesting
@testable import Login
import Testing

@Suite("login service over HTTP", .timeLimit(.minutes(2)))
struct LoginServiceTests {
    func phone() -> String { "+49" + String(Int.random(in: 100_000_000...999_999_999)) }

    func makeLogin(_ overrides: [String: String] = [:]) async throws -> HailApplication {
        var values = [
            "discovery.prefix": "/" + TestEnvironment.unique("login") + "/", "auth.signin.prefix": TestEnvironment.unique("failed"),
        ]
        for (key, value) in overrides { values[key] = value }
        return try await buildApplication(reader: try .testing(values, service: "login"))
    }

    @Test("sign-up, duplicate phone, sign-in, wrong password")
    func signUpAndIn() async throws {
        try await withRunningService(try await makeLogin()) { base in
            let phone = phone()
            let created = try await testRequest(
                .POST, base + "/v1/users", json: ["role": "rider", "phone": phone, "password": "correct horse", "name": "Ada"])
            #expect(created.status == 201)
            #expect(created.json["role"] as? String == "rider")
            #expect(created.json["password"] == nil && created.json["passwordHash"] == nil)

            let again = try await testRequest(
                .POST, base + "/v1/users", json: ["role": "driver", "phone": phone, "password": "another one", "name": "Eve"])
            #expect(again.status == 409)
            #expect(again.json["type"] as? String == "urn:hailstorm:problem:phone-taken")

            let signIn = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": phone, "password": "correct horse"])
            #expect(signIn.status == 200)
            #expect((signIn.json["accessToken"] as? String)?.split(separator: ".").count == 3)
            #expect(signIn.json["refreshToken"] is String)
            #expect(signIn.json["expiresIn"] as? Int == 900)

            let wrong = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": phone, "password": "wrong horse"])
            #expect(wrong.status == 401)
            #expect(wrong.header("Content-Type") == "application/problem+json")
            let unknown = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": self.phone(), "password": "whatever1"])
            #expect(unknown.status == 401)
            #expect(unknown.json["type"] as? String == wrong.json["type"] as? String, "unknown phones look like wrong passwords")
        }
    }

    @Test("bad input is a 400 problem naming the field")
    func badInput() async throws {
        try await withRunningService(try await makeLogin()) { base in
            let malformed = try await testRequest(.POST, base + "/v1/users", rawBody: "{\"role\": \"rider\", ")
            #expect(malformed.status == 400)
            #expect(malformed.header("Content-Type") == "application/problem+json")
            #expect(malformed.json["type"] as? String == "urn:hailstorm:problem:invalid-body")
            #expect((malformed.json["detail"] as? String)?.contains("not valid JSON") == true)

            let missing = try await testRequest(.POST, base + "/v1/users", json: ["role": "rider", "phone": phone(), "name": "Ada"])
            #expect(missing.status == 400)
            #expect(missing.json["field"] as? String == "password")

            let badRole = try await testRequest(
                .POST, base + "/v1/users", json: ["role": "pilot", "phone": phone(), "password": "12345678", "name": "Ada"])
            #expect(badRole.status == 400)
            #expect(badRole.json["field"] as? String == "role")

            let badPhone = try await testRequest(
                .POST, base + "/v1/users", json: ["role": "rider", "phone": "call me", "password": "12345678", "name": "Ada"])
            #expect(badPhone.status == 400)
            #expect(badPhone.json["field"] as? String == "phone")

            let admin = try await testRequest(
                .POST, base + "/v1/users", json: ["role": "admin", "phone": phone(), "password": "12345678", "name": "Mallory"])
            #expect(admin.status == 403)

            let typed = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": 123, "password": "x"])
            #expect(typed.status == 400)
            #expect(typed.json["field"] as? String == "phone")
        }
    }

    @Test("refresh rotates; a used refresh token revokes the session")
    func refreshRotation() async throws {
        try await withRunningService(try await makeLogin()) { base in
            let phone = phone()
            _ = try await testRequest(.POST, base + "/v1/users", json: ["role": "driver", "phone": phone, "password": "12345678", "name": "Dee"])
            let signIn = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": phone, "password": "12345678"])
            let first = try #require(signIn.json["refreshToken"] as? String)

            let rotated = try await testRequest(.POST, base + "/v1/sessions/refresh", json: ["refreshToken": first])
            #expect(rotated.status == 200)
            let second = try #require(rotated.json["refreshToken"] as? String)
            #expect(second != first)
            #expect(rotated.json["accessToken"] as? String != signIn.json["accessToken"] as? String)

            // The old token again: someone kept a copy. Refused, and the whole session ends.
            let replay = try await testRequest(.POST, base + "/v1/sessions/refresh", json: ["refreshToken": first])
            #expect(replay.status == 401)
            let afterReplay = try await testRequest(.POST, base + "/v1/sessions/refresh", json: ["refreshToken": second])
            #expect(afterReplay.status == 401)

            let bogus = try await testRequest(.POST, base + "/v1/sessions/refresh", json: ["refreshToken": "nope"])
            #expect(bogus.status == 401)
        }
    }

    @Test("login refuses to start without its own key in the JWKS, or below bcrypt cost 10 in production")
    func startsOnlyWithItsKey() async throws {
        await #expect(throws: ConfigurationError.self) {
            _ = try await makeLogin(["auth.signing.key": ""])
        }
        // Another service's key cannot make login: its tokens would not be users'.
        await #expect(throws: ConfigurationError.self) {
            _ = try await makeLogin(["auth.signing.key": TestKeys.privateKey("order")!])
        }
        // A key the JWKS does not list: nobody would accept what it signs.
        await #expect(throws: ConfigurationError.self) {
            _ = try await makeLogin(["auth.signing.key": TokenKeys.newPrivateKey()])
        }
        await #expect(throws: ConfigurationError.self) {
            _ = try await makeLogin(["mode": "production", "auth.bcrypt.cost": "4"])
        }
        _ = try await makeLogin(["mode": "production", "auth.bcrypt.cost": "10"])
    }

    @Test("a configured admin account is created at start")
    func adminSeed() async throws {
        let phone = phone()
        let login = try await makeLogin(["auth.admin.phone": phone, "auth.admin.password": "admin-password"])
        try await withRunningService(login) { base in
            let signIn = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": phone, "password": "admin-password"])
            #expect(signIn.status == 200)
            #expect((signIn.json["user"] as? [String: Any])?["role"] as? String == "admin")
        }
    }
}
