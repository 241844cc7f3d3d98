import Contracts
import Foundation
import HailKit
import HTTPTypes
import Testing

@Suite("problem documents as clients read them")
struct ProblemBodyTests {
    @Test(
        "a problem's body parses to the document it describes, whatever its text holds",
        arguments: [
            "plain", "with \"quotes\" and a \\ backslash", "lines\nand\ttabs\rand a bell \u{7}", "ünïcödé and 🚕",
            "", "a / slash",
        ])
    func roundTrip(text: String) throws {
        let problem = Problem(.conflict, slug: "sold-out", title: "Title: \(text)", detail: text, field: text.isEmpty ? nil : "pickup.lat")
        let body = problem.body(requestID: "req-\(text.count)")
        let document = try JSONDecoder().decode(ProblemDocument.self, from: Data(body.readableBytesView))
        #expect(document == problem.document(requestID: "req-\(text.count)"))
        // The same bytes the kit's encoder writes, once both are parsed.
        let encoded = try JSONBody.encoder.encode(problem.document(requestID: "req-\(text.count)"))
        let written = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? NSDictionary
        #expect(written == (try JSONSerialization.jsonObject(with: encoded) as? NSDictionary))
    }

    @Test("members that are absent stay absent")
    func absentMembers() throws {
        let problem = Problem(.tooManyRequests, slug: "rate-limited", title: "Too many requests")
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(problem.body(requestID: nil).readableBytesView)) as? [String: Any])
        #expect(Set(object.keys) == ["status", "title", "type"])
        #expect(object["status"] as? Int == 429)
        #expect(object["type"] as? String == "urn:hailstorm:problem:rate-limited")
    }
}
