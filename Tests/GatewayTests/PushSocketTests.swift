import Foundation
import HailKitTesting
import HTTPTypes
import HummingbirdWSClient
import Logging
import Synchronization
import Testing

/// The push WebSocket's door: a one-use ticket (no token in the URL), the Origin check, and refusals a
/// browser can read (close codes 4401 and 4403 with the problem as the reason).
@Suite("the push WebSocket's sign-in", .timeLimit(.minutes(2)))
struct PushSocketTests {
    /// Connects; the first text frame and the close code (0 when none or not a custom one). The client
    /// sends `Origin: ws://<host>`, as a program (not a page) would.
    func open(_ url: String) async throws -> (first: String?, close: Int) {
        let first = FirstMessage()
        let frame = try await WebSocketClient.connect(url: url, logger: Logger(label: "ws-test")) { inbound, _, _ in
            for try await message in inbound.messages(maxSize: 1 << 16) {
                if case .text(let text) = message { first.set(text); return }
            }
        }
        var code = 0
        if case .unknown(let number) = frame?.closeCode { code = Int(number) }
        return (first.value, code)
    }

    @Test("a ticket opens one socket once; no ticket, a used one, or another site's page is refused with a readable code")
    func tickets() async throws {
        try await withPlatform { base in
            let token = try #require(try await signedInRider(base)["accessToken"] as? String)
            let socket = base.replacingOccurrences(of: "http://", with: "ws://") + "/ws"
            func ticket() async throws -> String {
                let answer = try await testRequest(.POST, base + "/api/v1/ws/ticket", headers: ["Authorization": "Bearer \(token)"])
                #expect(answer.status == 201)
                return try #require(answer.json["ticket"] as? String)
            }
            let one = try await ticket()
            let opened = try await open(socket + "?ticket=\(one)")
            #expect(opened.first?.contains(#""type":"hello""#) == true, "\(opened)")
            let again = try await open(socket + "?ticket=\(one)")
            #expect(again.first == nil && again.close == 4401, "a used ticket: \(again)")
            let none = try await open(socket)
            #expect(none.first == nil && none.close == 4401, "no ticket: \(none)")
            // A page of another site: the handshake by hand, since the client sets its own Origin.
            let port = try #require(Int(base.split(separator: ":").last ?? ""))
            for (origin, code) in [("https://evil.example", 4403), ("http://127.0.0.1:3000", 0)] {
                let raw = try RawConnection(port: port)
                try await raw.send(
                    "GET /ws?ticket=\(try await ticket()) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\n"
                        + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                        + "Origin: \(origin)\r\n\r\n")
                let (bytes, _) = try await raw.readUntilClosed(timeout: .seconds(1))
                let text = String(decoding: bytes, as: UTF8.self)
                #expect(text.hasPrefix("HTTP/1.1 101"), "\(origin): \(text.prefix(40))")
                let frames = Array(bytes.split(separator: 0x0a).last ?? [])  // after the head's last line feed
                if code == 4403 {
                    // A close frame (0x88) whose payload starts with 4403.
                    #expect(frames.count >= 4 && frames[0] == 0x88 && Int(frames[2]) << 8 | Int(frames[3]) == 4403, "\(origin): \(frames.prefix(8))")
                } else {
                    #expect(text.contains("hello"), "the gateway's own host on another port: \(text.suffix(80))")
                }
            }
            // Over plain HTTP the same refusal is a problem document.
            let plain = try await testRequest(.GET, base + "/ws")
            #expect(plain.status == 401)
            #expect(plain.header("Content-Type") == "application/problem+json")
            let ticketless = try await testRequest(.POST, base + "/api/v1/ws/ticket")
            #expect(ticketless.status == 401)
        }
    }
}

final class FirstMessage: Sendable {
    private let box = Mutex<String?>(nil)
    func set(_ text: String) { box.withLock { if $0 == nil { $0 = text } } }
    var value: String? { box.withLock { $0 } }
}
