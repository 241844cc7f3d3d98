import Configuration
import Contracts
import Discovery
import Foundation
@testable import Gateway
import HailKit
import HailKitTesting
@testable import Coupon
@testable import Login
import Testing

/// Login and gateway as real servers, finding each other through the test run's etcd.
func withPlatform<T: Sendable>(
    gateway overrides: [String: String] = [:],
    redisPort: Int? = nil,
    withCoupon: Bool = false,
    _ body: @Sendable (_ gateway: String) async throws -> T
) async throws -> T {
    let prefix = "/" + TestEnvironment.unique("platform") + "/"
    if withCoupon {
        let coupon = try await Coupon.buildApplication(reader: try .testing([
            "discovery.prefix": prefix, "coupon.redis.prefix": TestEnvironment.unique("coupon"),
            "coupon.claims.stream": TestEnvironment.unique("claims"),
        ], redisPort: redisPort, service: "coupon"))
        return try await withRunningService(coupon) { _ in
            try await withPlatform(gateway: overrides, redisPort: redisPort, prefix: prefix, body)
        }
    }
    return try await withPlatform(gateway: overrides, redisPort: redisPort, prefix: prefix, body)
}

private func withPlatform<T: Sendable>(
    gateway overrides: [String: String], redisPort: Int?, prefix: String,
    _ body: @Sendable (_ gateway: String) async throws -> T
) async throws -> T {
    let login = try await Login.buildApplication(
        reader: try .testing(["discovery.prefix": prefix, "auth.signin.prefix": TestEnvironment.unique("failed")], redisPort: redisPort, service: "login"))
    var gatewayValues = [
        "discovery.prefix": prefix, "client.discovery.cache.ms": "0", "gateway.rate.prefix": TestEnvironment.unique("rl"),
    ]
    for (key, value) in overrides { gatewayValues[key] = value }
    let gateway = try await Gateway.buildApplication(reader: try .testing(gatewayValues, redisPort: redisPort, service: "gateway"))
    return try await withRunningService(login) { _ in
        try await withRunningService(gateway) { base in
            // The gateway finds login once its registration is in etcd.
            for _ in 0..<100 {
                let probe = try await testRequest(.POST, base + "/api/v1/auth/login", json: ["phone": "+10000000", "password": "x"])
                if probe.status != 503 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            return try await body(base)
        }
    }
}

func randomPhone() -> String { "+44" + String(Int.random(in: 1_000_000_000...9_999_999_999)) }

/// Signs up and signs in a rider through the gateway; returns the token pair as JSON.
func signedInRider(_ base: String) async throws -> [String: Any] {
    let phone = randomPhone()
    let signUp = try await testRequest(
        .POST, base + "/api/v1/auth/signup", json: ["role": "rider", "phone": phone, "password": "pass-word-1", "name": "Rita"])
    #expect(signUp.status == 201)
    let signIn = try await testRequest(.POST, base + "/api/v1/auth/login", json: ["phone": phone, "password": "pass-word-1"])
    #expect(signIn.status == 200)
    return signIn.json
}

@Suite("gateway in front of login, over HTTP", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(3)))
struct GatewayTests {
    @Test("sign-up and sign-in through the gateway; the token opens /me; wrong password is 401")
    func signInFlow() async throws {
        try await withPlatform { base in
            let tokens = try await signedInRider(base)
            let access = try #require(tokens["accessToken"] as? String)
            let me = try await testRequest(.GET, base + "/api/v1/me", headers: ["Authorization": "Bearer \(access)"])
            #expect(me.status == 200)
            #expect(me.json["role"] as? String == "rider")
            #expect(me.json["name"] as? String == "Rita")
            #expect(me.header("X-Request-ID") != nil)

            let user = try #require(tokens["user"] as? [String: Any])
            let wrong = try await testRequest(
                .POST, base + "/api/v1/auth/login", json: ["phone": user["phone"]!, "password": "not-the-password"])
            #expect(wrong.status == 401)
            #expect(wrong.header("Content-Type") == "application/problem+json")
        }
    }

    @Test("malformed JSON is a 400 problem naming the problem, and the caller's request id comes back")
    func malformed() async throws {
        try await withPlatform { base in
            let response = try await testRequest(
                .POST, base + "/api/v1/auth/signup", rawBody: "{\"phone\": ", headers: ["X-Request-ID": "req-malformed-1"])
            #expect(response.status == 400)
            #expect(response.header("Content-Type") == "application/problem+json")
            #expect(response.json["type"] as? String == "urn:hailstorm:problem:invalid-body")
            #expect(response.json["requestId"] as? String == "req-malformed-1")
            #expect(response.header("X-Request-ID") == "req-malformed-1")

            let wrongType = try await testRequest(
                .POST, base + "/api/v1/auth/signup", json: ["role": "rider", "phone": 5, "password": "p", "name": "n"])
            #expect(wrongType.status == 400)
            #expect(wrongType.json["field"] as? String == "phone")
        }
    }

    @Test("forged, expired and revoked tokens are 401")
    func badTokens() async throws {
        try await withPlatform { base in
            let tokens = try await signedInRider(base)
            let access = try #require(tokens["accessToken"] as? String)
            let refresh = try #require(tokens["refreshToken"] as? String)

            let none = try await testRequest(.GET, base + "/api/v1/me")
            #expect(none.status == 401)

            // Same claims, signature from another key under login's kid.
            let other = try TokenKeys.generate(issuers: ["login"])
            let forger = try await AccessTokens(service: "forger", signingKey: other.privateKeys["login"], jwks: other.jwks, cacheSize: 0)
            let user = try #require(tokens["user"] as? [String: Any])
            let userID = try #require(user["id"] as? String)
            let forged = try await forger.sign(AccessTokenClaims(
                userID: userID, role: .admin, tokenID: "x", issuedAt: Date(), expiresAt: Date().addingTimeInterval(600)))
            let forgedAnswer = try await testRequest(.GET, base + "/api/v1/me", headers: ["Authorization": "Bearer \(forged)"])
            #expect(forgedAnswer.status == 401)
            #expect(forgedAnswer.json["type"] as? String == "urn:hailstorm:problem:invalid-token")

            // Tampered payload of a real token.
            var parts = access.split(separator: ".").map(String.init)
            parts[1] = String(parts[1].reversed())
            let tampered = try await testRequest(
                .GET, base + "/api/v1/me", headers: ["Authorization": "Bearer \(parts.joined(separator: "."))"])
            #expect(tampered.status == 401)

            // Signed with the real key, but expired.
            let real = try await TestKeys.tokens()
            let expired = try await real.sign(AccessTokenClaims(
                userID: userID, role: .rider, tokenID: "y", issuedAt: Date().addingTimeInterval(-1200),
                expiresAt: Date().addingTimeInterval(-600)))
            let expiredAnswer = try await testRequest(.GET, base + "/api/v1/me", headers: ["Authorization": "Bearer \(expired)"])
            #expect(expiredAnswer.status == 401)
            #expect(expiredAnswer.json["type"] as? String == "urn:hailstorm:problem:token-expired")

            // Signed out: the same token, still unexpired, is refused.
            let logout = try await testRequest(
                .POST, base + "/api/v1/auth/logout", json: ["refreshToken": refresh], headers: ["Authorization": "Bearer \(access)"])
            #expect(logout.status == 204)
            let revoked = try await testRequest(.GET, base + "/api/v1/me", headers: ["Authorization": "Bearer \(access)"])
            #expect(revoked.status == 401)
            #expect(revoked.json["type"] as? String == "urn:hailstorm:problem:token-revoked")
            let refreshAfterLogout = try await testRequest(.POST, base + "/api/v1/auth/refresh", json: ["refreshToken": refresh])
            #expect(refreshAfterLogout.status == 401)

            // Other API paths need a token too.
            let unknown = try await testRequest(.GET, base + "/api/v1/rides/123")
            #expect(unknown.status == 401)
        }
    }

    @Test("refresh through the gateway rotates the tokens")
    func refresh() async throws {
        try await withPlatform { base in
            let tokens = try await signedInRider(base)
            let refresh = try #require(tokens["refreshToken"] as? String)
            let rotated = try await testRequest(.POST, base + "/api/v1/auth/refresh", json: ["refreshToken": refresh])
            #expect(rotated.status == 200)
            let newAccess = try #require(rotated.json["accessToken"] as? String)
            #expect(rotated.json["refreshToken"] as? String != refresh)
            let me = try await testRequest(.GET, base + "/api/v1/me", headers: ["Authorization": "Bearer \(newAccess)"])
            #expect(me.status == 200)
            let replay = try await testRequest(.POST, base + "/api/v1/auth/refresh", json: ["refreshToken": refresh])
            #expect(replay.status == 401)
        }
    }

    @Test("per-client rate limit answers 429 with Retry-After; oversized bodies 413")
    func limits() async throws {
        try await withPlatform(gateway: ["gateway.rate.auth.limit": "3", "gateway.rate.window.seconds": "5", "http.body.limit": "2048"]) { base in
            // Windows are aligned to the clock, every 5 s: begin early in one so that all five requests fall in it.
            let intoWindow = Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 5)
            if intoWindow > 2 { try await Task.sleep(for: .milliseconds(Int((5 - intoWindow) * 1000) + 50)) }
            var statuses: [Int] = []
            for _ in 0..<5 {
                let answer = try await testRequest(.POST, base + "/api/v1/auth/login", json: ["phone": "+4412345678", "password": "x"])
                statuses.append(answer.status)
                if answer.status == 429 {
                    let retryAfter = try #require(answer.header("Retry-After").flatMap(Int.init))
                    #expect((1...5).contains(retryAfter))
                    #expect(answer.json["type"] as? String == "urn:hailstorm:problem:rate-limited")
                }
            }
            // (Earlier probes while waiting for login may have used part of the budget.)
            #expect(statuses.suffix(2) == [429, 429])
            #expect(statuses.filter { $0 == 401 }.count <= 3)

            let big = try await testRequest(
                .POST, base + "/api/v1/auth/signup",
                json: ["role": "rider", "phone": "+441", "password": String(repeating: "p", count: 4000), "name": "n"])
            #expect(big.status == 413)
            #expect(big.json["type"] as? String == "urn:hailstorm:problem:payload-too-large")
        }
    }

    @Test("/metrics counts the requests per route")
    func metrics() async throws {
        try await withPlatform { base in
            for _ in 0..<3 {
                _ = try await testRequest(.GET, base + "/api/v1/me")
            }
            let metrics = try await testRequest(.GET, base + "/metrics")
            #expect(metrics.status == 200)
            let lines = metrics.text.split(separator: "\n").filter {
                $0.hasPrefix("hb_requests") && $0.contains("/api/v1/me") && $0.contains("401")
            }
            let count = lines.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
            #expect(count >= 3, "\(metrics.text.prefix(2000))")
            #expect(metrics.text.contains("http_server_request_duration"))
        }
    }

    @Test("/readyz fails while Redis is down and recovers after")
    func readiness() async throws {
        let redis = try RedisServerProcess()
        try await withPlatform(redisPort: redis.port) { base in
            let ready = try await testRequest(.GET, base + "/readyz")
            #expect(ready.status == 200)

            redis.kill(SIGKILL)
            let down = try await testRequest(.GET, base + "/readyz")
            #expect(down.status == 503)
            #expect(down.header("Content-Type") == "application/problem+json")
            #expect((down.json["detail"] as? String)?.contains("redis") == true)
            // Alive all the same: liveness is not readiness.
            #expect(try await testRequest(.GET, base + "/healthz").status == 200)

            try redis.start()
            var recovered = false
            for _ in 0..<50 where !recovered {
                recovered = try await testRequest(.GET, base + "/readyz").status == 200
                if !recovered { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(recovered)
        }
    }

    @Test("coupons through the gateway: an admin opens a campaign, a rider claims once, roles are enforced at the edge")
    func couponsThroughGateway() async throws {
        try await withPlatform(withCoupon: true) { base in
            let rider = try #require(try await signedInRider(base)["accessToken"] as? String)
            let tokens = try await TestKeys.tokens()
            let admin = try await tokens.sign(AccessTokenClaims(
                userID: "admin-gw", role: .admin, tokenID: UUID().uuidString, issuedAt: Date(), expiresAt: Date() + 600))
            let now = Date().timeIntervalSince1970
            let campaign: [String: Any] = [
                "name": "Gateway sale", "city": "test", "kind": "amount", "amountOffCents": 300, "minimumFareCents": 0,
                "stock": 2, "perUserLimit": 1, "startsAt": now - 1, "endsAt": now + 600,
            ]
            // The coupon service registers in etcd alongside login; wait until the gateway can reach it.
            var created = try await testRequest(
                .POST, base + "/api/v1/admin/coupons/campaigns", json: campaign, headers: ["Authorization": "Bearer \(admin)"])
            for _ in 0..<100 where created.status == 503 {
                try await Task.sleep(for: .milliseconds(50))
                created = try await testRequest(
                    .POST, base + "/api/v1/admin/coupons/campaigns", json: campaign, headers: ["Authorization": "Bearer \(admin)"])
            }
            #expect(created.status == 201)
            let id = try #require(created.json["id"] as? String)
            let byRider = try await testRequest(
                .POST, base + "/api/v1/admin/coupons/campaigns", json: campaign, headers: ["Authorization": "Bearer \(rider)"])
            #expect(byRider.status == 403)

            let list = try await testRequest(.GET, base + "/api/v1/coupons/campaigns", headers: ["Authorization": "Bearer \(rider)"])
            let listed = try #require(list.json["campaigns"] as? [[String: Any]])
            #expect(listed.contains { $0["id"] as? String == id && $0["remaining"] as? Int == 2 })

            let claim = try await testRequest(
                .POST, base + "/api/v1/coupons/campaigns/\(id)/claim", headers: ["Authorization": "Bearer \(rider)"])
            #expect(claim.status == 201)
            let again = try await testRequest(
                .POST, base + "/api/v1/coupons/campaigns/\(id)/claim", headers: ["Authorization": "Bearer \(rider)"])
            #expect(again.status == 409)
            #expect(again.json["type"] as? String == "urn:hailstorm:problem:limit-reached")

            var coupons: [[String: Any]] = []
            for _ in 0..<100 {
                let wallet = try await testRequest(.GET, base + "/api/v1/coupons/wallet", headers: ["Authorization": "Bearer \(rider)"])
                coupons = wallet.json["coupons"] as? [[String: Any]] ?? []
                if !coupons.isEmpty { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(coupons.count == 1)
            #expect(coupons.first?["claimID"] as? String == claim.json["claimID"] as? String)
            let audit = try await testRequest(
                .GET, base + "/api/v1/admin/coupons/campaigns/\(id)/audit", headers: ["Authorization": "Bearer \(admin)"])
            #expect(audit.json["granted"] as? Int == 1 && audit.json["persisted"] as? Int == 1)
        }
    }
}

@Suite("discovery through an etcd that dies", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(2)))
struct EtcdRestartTests {
    @Test("etcd killed and started again without its data: every service registers again within two TTLs and the gateway reaches login")
    func registrationsComeBack() async throws {
        let etcd = try await EtcdServerProcess()
        let ttl = 2
        let prefix = "/" + TestEnvironment.unique("etcd-restart") + "/"
        let shared = ["discovery.prefix": prefix, "discovery.etcd.endpoint": etcd.endpoint, "discovery.ttl.seconds": String(ttl)]
        let login = try await Login.buildApplication(
            reader: try .testing(shared.merging(["auth.signin.prefix": TestEnvironment.unique("failed")]) { $1 }, service: "login"))
        let gateway = try await Gateway.buildApplication(reader: try .testing(
            shared.merging(["gateway.rate.prefix": TestEnvironment.unique("rl")]) { $1 },
            service: "gateway"))
        try await withRunningService(login) { _ in
            try await withRunningService(gateway) { base in
                /// Sign-in with a wrong password answers 401 once the gateway reaches login, 503 while it cannot.
                func reachesLogin() async throws -> Bool {
                    let probe = try await testRequest(.POST, base + "/api/v1/auth/login", json: ["phone": "+10000000", "password": "x"])
                    return probe.status != 503
                }
                var reached = false
                for _ in 0..<200 where !reached {
                    reached = try await reachesLogin()
                    if !reached { try await Task.sleep(for: .milliseconds(50)) }
                }
                try #require(reached, "the gateway never reached login")

                etcd.kill()
                try await etcd.restart(keepingData: false)
                let restarted = ContinuousClock.now
                // Both registrations are gone with etcd's data; each service finds its lease lost at its
                // next keep-alive and registers again.
                let discovery = EtcdDiscovery(endpoint: etcd.endpoint, prefix: prefix, ttl: .seconds(ttl))
                var registered: Set<String> = []
                while registered.count < 2, ContinuousClock.now - restarted < .seconds(2 * ttl) {
                    registered = Set(try await ["login", "gateway"].asyncFilter { try await !discovery.instances(of: $0).isEmpty })
                    if registered.count < 2 { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(registered == ["login", "gateway"], "registered again within \(2 * ttl) s: \(registered)")
                var back = false
                while !back, ContinuousClock.now - restarted < .seconds(2 * ttl + 2) {
                    back = try await reachesLogin()
                    if !back { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(back, "the gateway reaches login through the new registration")
                // And each keeps that registration: the same lease, kept alive, not a new one every few seconds.
                let leases = try await leasesUnder(prefix, etcd: etcd.endpoint)
                try await Task.sleep(for: .seconds(2 * ttl))
                #expect(try await leasesUnder(prefix, etcd: etcd.endpoint) == leases, "the registrations kept their leases")
                #expect(leases.count == 2, "\(leases)")
            }
        }
    }
}

/// Key → lease of everything under `prefix`, read straight from etcd's JSON API.
func leasesUnder(_ prefix: String, etcd: String) async throws -> [String: String] {
    let start = Data(prefix.utf8)
    var end = Array(prefix.utf8)
    end[end.count - 1] += 1
    let answer = try await testRequest(
        .POST, etcd + "/v3/kv/range", json: ["key": start.base64EncodedString(), "range_end": Data(end).base64EncodedString()])
    var leases: [String: String] = [:]
    for kv in answer.json["kvs"] as? [[String: Any]] ?? [] {
        let key = (kv["key"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? "?"
        leases[key] = kv["lease"] as? String ?? "none"
    }
    return leases
}

extension Array {
    func asyncFilter(_ keep: (Element) async throws -> Bool) async rethrows -> [Element] {
        var kept: [Element] = []
        for element in self where try await keep(element) { kept.append(element) }
        return kept
    }
}
