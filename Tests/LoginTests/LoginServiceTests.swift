import Configuration
import Contracts
import Foundation
import HailKit
import HailKitTesting
@testable import Login
import Testing

@Suite("login service over HTTP", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(2)))
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

@Suite("who exists, and guessing", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(2)))
struct LoginHardeningTests {
    func makeLogin(_ overrides: [String: String] = [:]) async throws -> HailApplication {
        try await LoginServiceTests().makeLogin(overrides)
    }

    func digits() -> String { String(Int.random(in: 100_000_000...999_999_999)) }

    @Test("one number is one account however it is typed")
    func phonesNormalised() async throws {
        try await withRunningService(try await makeLogin()) { base in
            let national = "49" + digits()
            let created = try await testRequest(
                .POST, base + "/v1/users", json: ["role": "rider", "phone": "+" + national, "password": "pass-word-1", "name": "Ada"])
            #expect(created.status == 201)
            #expect(created.json["phone"] as? String == "+" + national)
            let spaced = national.prefix(2) + " " + national.dropFirst(2).prefix(3) + "-" + national.dropFirst(5)
            for typed in [national, "+" + spaced, "(" + national.prefix(2) + ") " + national.dropFirst(2)] {
                let again = try await testRequest(
                    .POST, base + "/v1/users", json: ["role": "rider", "phone": typed, "password": "pass-word-2", "name": "Eve"])
                #expect(again.status == 409, "\(typed) made a second account")
                let signIn = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": typed, "password": "pass-word-1"])
                #expect(signIn.status == 200, "\(typed) did not sign in")
            }
        }
    }

    @Test("names with control, bidirectional or invisible characters are refused", arguments: [
        "Ada\u{202E}gnal", "Ada\u{0007}", "Ada\u{200B}Lovelace", "Ada\u{2066}x\u{2069}", "Ada\nLovelace",
    ])
    func hiddenCharacters(name: String) async throws {
        try await withRunningService(try await makeLogin()) { base in
            let answer = try await testRequest(
                .POST, base + "/v1/users", json: ["role": "rider", "phone": "+49" + digits(), "password": "pass-word-1", "name": name])
            #expect(answer.status == 400)
            #expect(answer.json["field"] as? String == "name")
        }
    }

    @Test("the 6th failed sign-in for one phone within a minute is a 429 with Retry-After, even with the right password")
    func throttledPerPhone() async throws {
        try await withRunningService(try await makeLogin()) { base in
            let phone = "+49" + digits()
            _ = try await testRequest(.POST, base + "/v1/users", json: ["role": "rider", "phone": phone, "password": "pass-word-1", "name": "Ada"])
            for _ in 1...5 {
                let wrong = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": phone, "password": "wrong-guess"])
                #expect(wrong.status == 401)
            }
            let sixth = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": phone, "password": "wrong-guess"])
            #expect(sixth.status == 429)
            #expect(Int(sixth.header("Retry-After") ?? "") ?? 0 >= 1)
            let right = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": phone, "password": "pass-word-1"])
            #expect(right.status == 429, "the right password after 5 failures must wait too")
            // Another phone is not affected.
            let other = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": "+49" + digits(), "password": "x-y-z-1234"])
            #expect(other.status == 401)
        }
    }

    @Test("an unknown phone is checked against a hash of the configured cost, so it takes as long as a known one")
    func decoyCost() {
        #expect(Accounts.decoyHash(cost: 10).hasPrefix("$2b$10$") || Accounts.decoyHash(cost: 10).hasPrefix("$2a$10$"))
        #expect(Accounts.decoyHash(cost: 4).contains("$04$"))
    }

    @Test("an account's record: 401 without a token, 403 for another rider, 200 for itself")
    func userRecord() async throws {
        try await withRunningService(try await makeLogin()) { base in
            let phone = "+49" + digits()
            let created = try await testRequest(
                .POST, base + "/v1/users", json: ["role": "rider", "phone": phone, "password": "pass-word-1", "name": "Ada"])
            let id = try #require(created.json["id"] as? String)
            let anonymous = try await testRequest(.GET, base + "/v1/users/\(id)")
            #expect(anonymous.status == 401)
            #expect(anonymous.json["phone"] == nil)
            let other = try await TestKeys.userToken("someone-else", role: .rider)
            let nosy = try await testRequest(.GET, base + "/v1/users/\(id)", headers: ["Authorization": "Bearer \(other)"])
            #expect(nosy.status == 403)
            let signIn = try await testRequest(.POST, base + "/v1/sessions", json: ["phone": phone, "password": "pass-word-1"])
            let own = try #require(signIn.json["accessToken"] as? String)
            let mine = try await testRequest(.GET, base + "/v1/users/\(id)", headers: ["Authorization": "Bearer \(own)"])
            #expect(mine.status == 200)
            #expect(mine.json["phone"] as? String == phone)
        }
    }
}
