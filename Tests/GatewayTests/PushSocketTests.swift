import Foundation
import HailKitTesting
import HummingbirdWSClient
import Logging
import RedisKit
import Synchronization
import Testing

/// The push WebSocket's door: a one-use ticket (no token in the URL), the Origin check, and refusals a
/// browser can read (close codes 4401 and 4403 with the problem as the reason).
@Suite("the push WebSocket's sign-in", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(2)))
struct PushSocketTests {
    /// A WebSocket handshake by hand, as a browser page at `origin` would send it, and what the gateway
    /// sends back within a second: the response head and the first frame after it. Raw bytes, each read
    /// bounded, so a refusal that never comes is a failed expectation rather than a test that hangs.
    func handshake(port: Int, ticket: String?, origin: String) async throws -> (head: String, frame: [UInt8]) {
        let raw = try RawConnection(port: port)
        try await raw.send(
            "GET /ws\(ticket.map { "?ticket=\($0)" } ?? "") HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                + "Origin: \(origin)\r\n\r\n")
        let (bytes, _) = try await raw.readUntilClosed(timeout: .seconds(1))
        let end = Array("\r\n\r\n".utf8)
        guard let split = (0...max(0, bytes.count - end.count)).first(where: { bytes[$0..<min($0 + end.count, bytes.count)].elementsEqual(end) }) else {
            return (String(decoding: bytes, as: UTF8.self), [])
        }
        return (String(decoding: bytes[..<split], as: UTF8.self), Array(bytes[(split + end.count)...]))
    }

    /// The close code of a close frame (0x88, unmasked from the server), or nil.
    func closeCode(_ frame: [UInt8]) -> Int? {
        frame.count >= 4 && frame[0] == 0x88 ? Int(frame[2]) << 8 | Int(frame[3]) : nil
    }

    @Test("a ticket opens one socket once; no ticket, a used one, or another site's page is refused with a readable code")
    func tickets() async throws {
        try await withPlatform { base in
            let token = try #require(try await signedInRider(base)["accessToken"] as? String)
            let port = try #require(Int(base.split(separator: ":").last ?? ""))
            let ownPage = "http://127.0.0.1:3000"  // the gateway's own host, another port: the same site
            func ticket() async throws -> String {
                let answer = try await testRequest(.POST, base + "/api/v1/ws/ticket", headers: ["Authorization": "Bearer \(token)"])
                #expect(answer.status == 201)
                return try #require(answer.json["ticket"] as? String)
            }
            let one = try await ticket()
            let opened = try await handshake(port: port, ticket: one, origin: ownPage)
            #expect(opened.head.hasPrefix("HTTP/1.1 101"), "\(opened.head.prefix(40))")
            #expect(opened.frame.first == 0x81 && String(decoding: opened.frame, as: UTF8.self).contains(#""type":"hello""#), "\(opened.frame.prefix(40))")
            let again = try await handshake(port: port, ticket: one, origin: ownPage)
            #expect(closeCode(again.frame) == 4401, "a used ticket: \(again.head.prefix(40)) \(again.frame.prefix(8))")
            let none = try await handshake(port: port, ticket: nil, origin: ownPage)
            #expect(closeCode(none.frame) == 4401, "no ticket: \(none.head.prefix(40)) \(none.frame.prefix(8))")
            let elsewhere = try await handshake(port: port, ticket: try await ticket(), origin: "https://evil.example")
            #expect(elsewhere.head.hasPrefix("HTTP/1.1 101"), "\(elsewhere.head.prefix(40))")
            #expect(closeCode(elsewhere.frame) == 4403, "another site's page: \(elsewhere.frame.prefix(8))")
            // Over plain HTTP the same refusal is a problem document.
            let plain = try await testRequest(.GET, base + "/ws")
            #expect(plain.status == 401)
            #expect(plain.header("Content-Type") == "application/problem+json")
            let ticketless = try await testRequest(.POST, base + "/api/v1/ws/ticket")
            #expect(ticketless.status == 401)
        }
    }
    @Test("a gateway hears a user's pushes only while that user has a socket there, from the hello on: one published right after the hello arrives; none is subscribed for a user without a socket, nor after the socket closed")
    func subscribedWhileConnected() async throws {
        try await withPlatform { base in
            let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort))
            defer { Task { await redis.shutdown() } }
            let rider = try await signedInRider(base)
            let token = try #require(rider["accessToken"] as? String)
            let user = try #require((rider["user"] as? [String: Any])?["id"] as? String)
            let channel = "push:user:\(user)"
            func subscribers() async throws -> Int {
                let reply = try await redis.send(RedisCommand("PUBSUB", "NUMSUB", channel)).array ?? []
                return reply.count == 2 ? (reply[1].int ?? -1) : -1
            }
            #expect(try await subscribers() == 0, "nobody listens for a user without a socket")
            #expect(try await redis.send(RedisCommand("PUBLISH", channel, "lost")).int == 0)

            let ticket = try await testRequest(.POST, base + "/api/v1/ws/ticket", headers: ["Authorization": "Bearer \(token)"])
            let port = try #require(Int(base.split(separator: ":").last ?? ""))
            let url = "ws://127.0.0.1:\(port)/ws?ticket=\(try #require(ticket.json["ticket"] as? String))"
            let received = Mutex<[String]>([])
            let socket = Task {
                _ = try await WebSocketClient.connect(url: url, logger: Logger(label: "push-test")) { inbound, _, _ in
                    for try await message in inbound.messages(maxSize: 1 << 16) {
                        guard case .text(let text) = message else { continue }
                        received.withLock { $0.append(text) }
                        // Published the moment the hello is read: the gateway must already be listening.
                        if text.contains(#""type":"hello""#) {
                            _ = try await redis.send(RedisCommand("PUBLISH", channel, #"{"type":"right-after-hello"}"#))
                        }
                    }
                }
            }
            defer { socket.cancel() }
            let deadline = ContinuousClock.now + .seconds(10)
            while !received.withLock({ $0.contains { $0.contains("right-after-hello") } }), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(received.withLock { $0.contains { $0.contains("right-after-hello") } }, "\(received.withLock { $0 })")
            #expect(try await subscribers() == 1)
            #expect(try await redis.send(RedisCommand("PUBLISH", "push:user:someone-else", "x")).int == 0)

            socket.cancel()
            let closedBy = ContinuousClock.now + .seconds(10)
            while try await subscribers() != 0, ContinuousClock.now < closedBy { try await Task.sleep(for: .milliseconds(50)) }
            #expect(try await subscribers() == 0, "the channel is dropped once the user's last socket closed")
        }
    }
}
