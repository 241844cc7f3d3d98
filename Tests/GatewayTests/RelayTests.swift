import Foundation
import HailKitTesting
import Testing

/// The relayed routes' common case is answered in front of the router (`RelayHandler`); everything else
/// by the router. A client sees one gateway: answers in the order it asked, the same headers and
/// problems either way, idle connections closed, every request in the metrics.
@Suite("the gateway's relay in front of its router", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(3)))
struct RelayTests {
    /// The relay calls only instances discovery listed within the cache's time (the other gateway tests
    /// turn the cache off, so that every call looks again).
    static let relaying = ["client.discovery.cache.ms": "1000"]

    /// The answers in `bytes`, in order: status, headers (names lowercased) and body.
    static func answers(_ bytes: [UInt8]) -> [(status: Int, headers: [String: String], body: String)] {
        var answers: [(Int, [String: String], String)] = []
        var rest = bytes[...]
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        while let end = rest.firstRange(of: separator) {
            let head = String(decoding: rest[rest.startIndex..<end.lowerBound], as: UTF8.self)
            var lines = head.components(separatedBy: "\r\n")
            let status = Int(lines.removeFirst().split(separator: " ")[1]) ?? 0
            var headers: [String: String] = [:]
            for line in lines {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            let length = Int(headers["content-length"] ?? "0") ?? 0
            let bodyEnd = min(rest.endIndex, end.upperBound + length)
            answers.append((status, headers, String(decoding: rest[end.upperBound..<bodyEnd], as: UTF8.self)))
            rest = rest[bodyEnd...]
        }
        return answers
    }

    @Test("requests pipelined on one connection, relayed and routed mixed, are answered in the order sent")
    func pipelinedInOrder() async throws {
        // A window long enough that the counts below do not start again mid-test.
        try await withPlatform(gateway: Self.relaying.merging(["gateway.rate.window.seconds": "60"]) { $1 }, withCoupon: true) { base in
            let tokens = try await signedInRider(base)
            let access = try #require(tokens["accessToken"] as? String)
            // The first use verifies the token (through the router); from then on it is remembered.
            let first = try await testRequest(.GET, base + "/api/v1/me", headers: ["Authorization": "Bearer \(access)"])
            #expect(first.status == 200)

            let auth = "Authorization: Bearer \(access)\r\n"
            // p-2 takes the router a while (it reads and decodes most of a megabyte): the relayed p-3 behind
            // it waits for its answer.
            let large = #"{"pickup":{"lat":"# + String(repeating: " ", count: 900_000) + "}}"
            let requests: [(id: String, text: String)] = [
                ("p-1", "GET /api/v1/coupons/campaigns HTTP/1.1\r\nHost: a\r\n\(auth)"),
                ("p-2", "POST /api/v1/rides/quote HTTP/1.1\r\nHost: a\r\n\(auth)X-Hailstorm-Deadline-Ms: 5000\r\nContent-Type: application/json\r\nContent-Length: \(large.utf8.count)\r\n"),
                ("p-3", "GET /api/v1/me HTTP/1.1\r\nHost: a\r\n\(auth)"),
                ("p-4", "POST /api/v1/coupons/campaigns/no-such-campaign/claim HTTP/1.1\r\nHost: a\r\n\(auth)Content-Length: 0\r\n"),
                ("p-5", "GET /api/v1/no/such/route HTTP/1.1\r\nHost: a\r\n\(auth)"),
                ("p-6", "POST /api/v1/rides/quote HTTP/1.1\r\nHost: a\r\n\(auth)Content-Type: application/json\r\nContent-Length: 9\r\n"),
                ("p-7", "GET /api/v1/me HTTP/1.1\r\nHost: a\r\n\(auth)"),
                ("p-8", "GET /api/v1/me HTTP/1.1\r\nHost: a\r\n\(auth)Connection: close\r\n"),
            ]
            var wire = ""
            for (id, text) in requests {
                wire += text + "X-Request-ID: \(id)\r\n\r\n"
                if id == "p-2" { wire += large }
                if id == "p-6" { wire += #"{"bad":1}"# }
            }
            let connection = try RawConnection(port: try #require(Int(base.split(separator: ":").last ?? "")))
            try await connection.send(wire)
            let (bytes, closed) = try await connection.readUntilClosed(timeout: .seconds(10))
            #expect(closed, "Connection: close on the last request closes the connection after its answer")
            let answers = Self.answers(bytes)
            #expect(answers.map { $0.headers["x-request-id"] ?? "-" } == requests.map(\.id))
            #expect(answers.map(\.status) == [200, 400, 200, 404, 404, 400, 200, 200])
            // Every status line, relayed or routed, carries its reason phrase.
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(text.components(separatedBy: "HTTP/1.1 200 OK\r\n").count - 1 == 4)
            #expect(text.components(separatedBy: "HTTP/1.1 404 Not Found\r\n").count - 1 == 2)
            guard answers.count == requests.count else { return }
            // A relayed answer carries what a routed one does.
            for index in [0, 2, 3, 6] {
                #expect(answers[index].headers["ratelimit-limit"] != nil)
                #expect(answers[index].headers["date"] != nil)
                #expect(answers[index].headers["server"] == "hailstorm-gateway")
            }
            #expect(answers[0].headers["content-type"] == "application/json")
            #expect(answers[3].headers["content-type"] == "application/problem+json")
            #expect(answers[3].body.contains("\"requestId\":\"p-4\""))
            // A body that does not match the endpoint is the router's 400, naming the field.
            #expect(answers[5].body.contains("\"field\":\"pickup\""))
            #expect(answers[2].body == answers[6].body)
            // Each request counted once against the rider's budget, in the order it came.
            let remaining = [0, 2, 3, 6].compactMap { Int(answers[$0].headers["ratelimit-remaining"] ?? "") }
            #expect(remaining == remaining.sorted(by: >))

            // Relayed requests are in the router's metrics, under the route's name.
            let metrics = try await testRequest(.GET, base + "/metrics")
            let line = metrics.text.split(separator: "\n").first {
                $0.hasPrefix("hb_requests{") && $0.contains("http_route=\"/api/v1/coupons/campaigns\"")
                    && $0.contains("http_response_status_code=\"200\"")
            }
            #expect(line != nil, "relayed requests are counted in hb_requests")
        }
    }

    @Test("a path id written with percent escapes reaches the service as the client wrote it, routed or relayed")
    func percentEncodedID() async throws {
        try await withPlatform(gateway: Self.relaying, withCoupon: true) { base in
            let tokens = try await signedInRider(base)
            let access = try #require(tokens["accessToken"] as? String)
            // The first request verifies the token (the router's path); the second is relayed.
            for path in ["router", "relay"] {
                let answer = try await testRequest(
                    .GET, base + "/api/v1/coupons/campaigns/no%20such%2Fcampaign", headers: ["Authorization": "Bearer \(access)"])
                #expect(answer.status == 404, "\(path): \(answer.text)")
                #expect(answer.json["detail"] as? String == "No campaign no%20such%2Fcampaign", "\(path): \(answer.text)")
            }
        }
    }

    @Test("a request that arrives a few bytes at a time, one with two tokens and a chunked one that the relay leaves to the router, are answered in order")
    func fragmentedAndChunked() async throws {
        try await withPlatform(gateway: Self.relaying.merging(["gateway.rate.window.seconds": "60"]) { $1 }, withCoupon: true) { base in
            let access = try #require(try await signedInRider(base)["accessToken"] as? String)
            let auth = "Authorization: Bearer \(access)\r\n"
            let connection = try RawConnection(port: try #require(Int(base.split(separator: ":").last ?? "")))
            try await connection.send("GET /api/v1/me HTTP/1.1\r\nHost: a\r\n\(auth)X-Request-ID: s-1\r\n\r\n")
            try await Task.sleep(for: .milliseconds(300))
            // Relayed (the token is known by now), sent seven bytes at a time.
            let split = Array("GET /api/v1/coupons/campaigns HTTP/1.1\r\nHost: a\r\n\(auth)X-Request-ID: s-2\r\n\r\n".utf8)
            for start in stride(from: 0, to: split.count, by: 7) {
                try await connection.send(Array(split[start..<min(split.count, start + 7)]))
                try await Task.sleep(for: .milliseconds(5))
            }
            try await connection.send(
                // Two tokens: not the relay's to choose one; the router refuses the pair.
                "GET /api/v1/me HTTP/1.1\r\nHost: a\r\n\(auth)\(auth)X-Request-ID: s-2b\r\n\r\n"
                    + "POST /api/v1/coupons/campaigns/no-such-campaign/claim HTTP/1.1\r\nHost: a\r\n\(auth)X-Request-ID: s-3\r\n"
                    + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                    + "GET /api/v1/me HTTP/1.1\r\nHost: a\r\n\(auth)X-Request-ID: s-4\r\nConnection: close\r\n\r\n")
            let (bytes, closed) = try await connection.readUntilClosed(timeout: .seconds(10))
            #expect(closed)
            let answers = Self.answers(bytes)
            #expect(answers.map { $0.headers["x-request-id"] ?? "-" } == ["s-1", "s-2", "s-2b", "s-3", "s-4"])
            #expect(answers.map(\.status) == [200, 200, 401, 404, 200])
            #expect(answers.count == 5 && answers[1].headers["ratelimit-remaining"] != nil && answers[1].body.contains("\"campaigns\""))
        }
    }

    @Test("a token the gateway has not seen is verified before its request is relayed; requests pipelined behind it wait their turn")
    func freshTokensInOrder() async throws {
        try await withPlatform(gateway: Self.relaying.merging(["gateway.rate.window.seconds": "60"]) { $1 }, withCoupon: true) { base in
            // Tokens checked so far in this process (the tests share one metrics registry).
            func verified(_ service: String, by: String) async throws -> Double {
                try await testRequest(.GET, base + "/metrics").text.split(separator: "\n")
                    .first { $0.hasPrefix("hailstorm_tokens_verified_total{") && $0.contains("service=\"\(service)\"") && $0.contains("by=\"\(by)\"") }
                    .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? 0
            }
            let attestedBefore = try await verified("coupon", by: "attestation")
            let signedBefore = try await verified("coupon", by: "signature")
            // Two riders whose tokens this gateway has never verified (sign-in goes to login).
            let first = try #require(try await signedInRider(base)["accessToken"] as? String)
            let second = try #require(try await signedInRider(base)["accessToken"] as? String)
            // The first rider's token with the signature of the second's: well formed, signed with a key
            // the platform trusts, and forged.
            let forged = first.split(separator: ".").prefix(2).joined(separator: ".") + "." + (second.split(separator: ".").last ?? "")
            let requests: [(id: String, token: String, path: String)] = [
                ("f-1", first, "GET /api/v1/me"),
                ("f-2", forged, "GET /api/v1/me"),
                ("f-3", second, "GET /api/v1/coupons/campaigns"),
                ("f-4", first, "GET /api/v1/me"),
                ("f-5", "not-a-token", "GET /api/v1/me"),
                ("f-6", second, "POST /api/v1/coupons/campaigns/no-such-campaign/claim"),
            ]
            var wire = ""
            for (id, token, line) in requests {
                wire += "\(line) HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \(token)\r\nContent-Length: 0\r\nX-Request-ID: \(id)\r\n\r\n"
            }
            wire += "GET /api/v1/me HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \(second)\r\nConnection: close\r\nX-Request-ID: f-7\r\n\r\n"
            let connection = try RawConnection(port: try #require(Int(base.split(separator: ":").last ?? "")))
            try await connection.send(wire)
            let (bytes, closed) = try await connection.readUntilClosed(timeout: .seconds(10))
            #expect(closed)
            let answers = Self.answers(bytes)
            #expect(answers.map { $0.headers["x-request-id"] ?? "-" } == requests.map(\.id) + ["f-7"])
            #expect(answers.map(\.status) == [200, 401, 200, 200, 401, 404, 200])
            guard answers.count == requests.count + 1 else { return }
            // Each rider's own record, whichever way it went.
            #expect(answers[0].body == answers[3].body)
            #expect(answers[0].body != answers[6].body)
            #expect(answers[1].headers["content-type"] == "application/problem+json")
            #expect(answers[1].body.contains("invalid-token"))
            #expect(answers[1].headers["www-authenticate"]?.contains("invalid_token") == true)
            #expect(answers[5].body.contains("\"requestId\":\"f-6\""))
            for index in [0, 2, 3, 5, 6] {
                #expect(answers[index].headers["ratelimit-limit"] != nil)
                #expect(answers[index].headers["server"] == "hailstorm-gateway")
            }

            // A third rider through the router (a caller's deadline is the router's to keep). The coupon
            // service took the gateway's word for each of the three requests it got (f-3, f-6 and this one),
            // on either path, and verified no token of its own.
            let third = try #require(try await signedInRider(base)["accessToken"] as? String)
            let routed = try await testRequest(
                .GET, base + "/api/v1/coupons/campaigns", headers: ["Authorization": "Bearer \(third)", "X-Hailstorm-Deadline-Ms": "5000"])
            #expect(routed.status == 200)
            #expect(try await verified("coupon", by: "attestation") - attestedBefore == 3)
            #expect(try await verified("coupon", by: "signature") - signedBefore == 0)
        }
    }

    @Test("a connection that only carried relayed requests is closed once idle, and not while one is in flight")
    func idleTimeout() async throws {
        try await withPlatform(gateway: Self.relaying.merging(["http.idle.timeout.seconds": "1"]) { $1 }, withCoupon: true) { base in
            let tokens = try await signedInRider(base)
            let access = try #require(tokens["accessToken"] as? String)
            _ = try await testRequest(.GET, base + "/api/v1/me", headers: ["Authorization": "Bearer \(access)"])

            let connection = try RawConnection(port: try #require(Int(base.split(separator: ":").last ?? "")))
            let request = "GET /api/v1/coupons/campaigns HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \(access)\r\n\r\n"
            // Busy for longer than the idle timeout: one request every 300 ms for 2 s keeps it open.
            let started = ContinuousClock.now
            var answered = 0
            while ContinuousClock.now - started < .seconds(2) {
                try await connection.send(request)
                let (bytes, closed) = try await connection.readUntilClosed(timeout: .milliseconds(300))
                #expect(!closed, "closed while in use")
                if closed { return }
                answered += Self.answers(bytes).filter { $0.status == 200 }.count
            }
            #expect(answered >= 5)
            // Then idle: closed within the timeout and one check.
            let (_, closed) = try await connection.readUntilClosed(timeout: .seconds(4))
            #expect(closed, "an idle connection stays open")
        }
    }
}
