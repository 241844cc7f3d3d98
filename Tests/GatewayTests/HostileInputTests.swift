import Foundation
import HailKitTesting
import Testing

/// What an attacker sends the gateway before signing in: bytes that are not HTTP/1.1, deadlines meant to
/// overflow, connections that never finish a header. Every one gets a 4xx at once or is closed, and the
/// gateway (running in this test process, so a trap would end the test run) keeps answering.
@Suite("hostile input at the gateway", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(3)))
struct HostileInputTests {
    static let malformed: [(name: String, bytes: [UInt8])] = [
        ("bare LF inside a header", Array("GET /healthz HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n".utf8)),
        ("bare CR inside a header", Array("GET /healthz HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n".utf8)),
        ("a 1 MB header", Array(("GET /healthz HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 1 << 20) + "\r\n\r\n").utf8)),
        ("2,000 headers", Array(("GET /healthz HTTP/1.1\r\n" + (0..<2000).map { "X-\($0): v\r\n" }.joined() + "\r\n").utf8)),
        ("HTTP/2.0 on the request line", Array("GET /healthz HTTP/2.0\r\nHost: a\r\n\r\n".utf8)),
        ("a TLS ClientHello", [0x16, 0x03, 0x01, 0x00, 0x2e, 0x01, 0x00, 0x00, 0x2a, 0x03, 0x03] + Array(repeating: 0x11, count: 40)),
        ("Content-Length with Transfer-Encoding", Array(
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".utf8)),
        ("two Content-Lengths", Array(
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".utf8)),
    ]

    @Test("malformed requests are answered 400 or 431 and closed at once", arguments: Self.malformed.indices)
    func malformedRequest(index: Int) async throws {
        let (name, bytes) = Self.malformed[index]
        try await withPlatform { base in
            let connection = try RawConnection(port: try #require(Int(base.split(separator: ":").last ?? "")))
            try await connection.send(bytes)
            let (answer, closed) = try await connection.readUntilClosed(timeout: .seconds(3))
            let statusLine = String(decoding: answer.prefix(12), as: UTF8.self)
            #expect(statusLine == "HTTP/1.1 400" || statusLine == "HTTP/1.1 431", "\(name): answered \(statusLine)")
            #expect(closed, "\(name): the connection stayed open")
            let health = try await testRequest(.GET, base + "/healthz")
            #expect(health.status == 200)
        }
    }

    @Test("a deadline header too large to convert is capped, one that is not a number is a 400")
    func deadlineHeader() async throws {
        try await withPlatform { base in
            let huge = try await testRequest(.GET, base + "/healthz", headers: ["X-Hailstorm-Deadline-Ms": "99999999999999"])
            #expect(huge.status == 200)
            let huger = try await testRequest(
                .GET, base + "/healthz", headers: ["X-Hailstorm-Deadline-Ms": "9223372036854775807"])
            #expect(huger.status == 200)
            let overflow = try await testRequest(
                .GET, base + "/healthz", headers: ["X-Hailstorm-Deadline-Ms": "99999999999999999999999"])
            #expect(overflow.status == 400)
            #expect(overflow.json["field"] as? String == "X-Hailstorm-Deadline-Ms")
            let negative = try await testRequest(.GET, base + "/healthz", headers: ["X-Hailstorm-Deadline-Ms": "-5"])
            #expect(negative.status == 400)
        }
    }

    @Test("200 connections that send half a header are closed within the header timeout")
    func slowloris() async throws {
        try await withPlatform(gateway: ["http.idle.timeout.seconds": "2"]) { base in
            let port = try #require(Int(base.split(separator: ":").last ?? ""))
            var connections: [RawConnection] = []
            for _ in 0..<200 {
                let connection = try RawConnection(port: port)
                try await connection.send("GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ")
                connections.append(connection)
            }
            let started = ContinuousClock.now
            for connection in connections {
                let (_, closed) = try await connection.readUntilClosed(timeout: .seconds(5) - (ContinuousClock.now - started))
                #expect(closed)
            }
            let health = try await testRequest(.GET, base + "/healthz")
            #expect(health.status == 200)
        }
    }

    @Test("a client address over its connection cap is refused; the others are served")
    func connectionCap() async throws {
        try await withPlatform(gateway: ["http.connections.per.client": "8"]) { base in
            let port = try #require(Int(base.split(separator: ":").last ?? ""))
            // The test's own HTTP client may hold some of the eight since the platform's start-up probe.
            var held: [RawConnection] = []
            var refused = 0
            for _ in 0..<12 {
                let connection = try RawConnection(port: port)
                let (_, closed) = try await connection.readUntilClosed(timeout: .milliseconds(300))
                if closed { refused += 1 } else { held.append(connection) }
            }
            #expect(held.count <= 8)
            #expect(refused >= 4)
            held.removeAll()
            // Once they are gone, the address is served again.
            var served = false
            for _ in 0..<20 where !served {
                served = (try? await testRequest(.GET, base + "/healthz"))?.status == 200
                if !served { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(served)
        }
    }
}
