import Foundation
import Logging
import Testing

@testable import HailKit

@Suite("log lines as log pipelines read them")
struct JSONLogHandlerTests {
    let handler = JSONLogHandler(label: "hailstorm.order", service: "order", instance: "order-1")

    @Test(
        "a line parses to the fields it was given, whatever their text holds",
        arguments: ["plain", "with \"quotes\" and a \\ backslash", "lines\nand\ttabs\rand a bell \u{7}", "ünïcödé and 🚕", "", "a / slash"])
    func fields(text: String) throws {
        let metadata: Logger.Metadata = [
            "order": .string(text), "fare": .stringConvertible(889), "drivers": .array(["d1", .string(text)]),
            "where": .dictionary(["lat": "52.5", "name": .string(text)]),
            // The handler's own fields win over metadata of the same name.
            "level": "forged", "service": "forged",
        ]
        let line = handler.render(level: .warning, message: "order \(text)", fields: metadata, at: JSONLogHandler.now())
        let bytes = Data(line.readableBytesView)
        #expect(bytes.last == UInt8(ascii: "\n"))
        #expect(bytes.dropLast().contains(UInt8(ascii: "\n")) == false, "one line, whatever the text holds")
        let object = try #require(try JSONSerialization.jsonObject(with: bytes) as? [String: Any])
        #expect(object["order"] as? String == text)
        #expect(object["fare"] as? String == "889")
        #expect(object["drivers"] as? [String] == ["d1", text])
        #expect(object["where"] as? [String: String] == ["lat": "52.5", "name": text])
        #expect(object["level"] as? String == "warning")
        #expect(object["service"] as? String == "order")
        #expect(object["instance"] as? String == "order-1")
        #expect(object["logger"] as? String == "hailstorm.order")
        #expect(object["msg"] as? String == "order \(text)")
        #expect(object.count == 10)
    }

    @Test("the time comes first, then every field by name")
    func order() throws {
        let metadata: Logger.Metadata = ["zone": "z", "amount": "1", "order": "o", "request_id": "r", "trace_id": "t"]
        let text = String(decoding: handler.render(level: .info, message: "m", fields: metadata, at: JSONLogHandler.now()).readableBytesView, as: UTF8.self)
        #expect(text.hasPrefix("{\"ts\":\""))
        let names = try NSRegularExpression(pattern: "\"([a-z_]+)\":").matches(in: text, range: NSRange(text.startIndex..., in: text)).map {
            String(text[Range($0.range(at: 1), in: text)!])
        }
        #expect(names == ["ts", "amount", "instance", "level", "logger", "msg", "order", "request_id", "service", "trace_id", "zone"])
    }

    @Test("the time is ISO 8601 in UTC to the millisecond, as a date formatter writes it", arguments: 0..<200)
    func time(round: Int) throws {
        let seconds = round == 0 ? 0 : Int.random(in: 0...4_102_444_800)
        let nanoseconds = round == 0 ? 999_999_999 : Int.random(in: 0..<1_000_000_000)
        let line = handler.render(level: .info, message: "m", fields: [:], at: timespec(tv_sec: seconds, tv_nsec: nanoseconds))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.readableBytesView)) as? [String: Any])
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        // Whole milliseconds, so the formatter's rounding and the handler's truncation agree.
        let date = Date(timeIntervalSince1970: Double(seconds) + Double(nanoseconds / 1_000_000) / 1000)
        #expect(object["ts"] as? String == formatter.string(from: date), "at \(seconds) s \(nanoseconds) ns")
    }
}
