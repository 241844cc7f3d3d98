import Contracts
import Foundation
import HailKit
import NIOCore
import Testing

/// The fleet's bodies (a driver's fixes, the gateway's batches of them and matching's answers) are read
/// and written without Foundation's coders when they have their plain shape. What a body means must not
/// change: every body is read to the same value, or refused with the same problem, as the general
/// decoder reads or refuses it, and what is written reads back as the value written.
@Suite("fixes read and written on their own")
struct ScannedJSONTests {
    /// Through the fast reading when it takes the body, else the general decoder (as services read).
    private func read<T: Decodable>(_ type: T.Type, _ body: String) -> Result<T, Problem> {
        do { return .success(try JSONBody.decode(T.self, from: ByteBuffer(string: body))) } catch let problem as Problem {
            return .failure(problem)
        } catch { return .failure(Problem(.internalServerError, slug: "unexpected", title: "\(error)")) }
    }

    /// The general decoder alone.
    private func general<T: Decodable>(_ type: T.Type, _ body: String) -> T? {
        try? JSONDecoder().decode(T.self, from: Data(body.utf8))
    }

    private func scanned<T: ScannableJSON>(_ type: T.Type, _ body: String) -> T? {
        Array(body.utf8).withUnsafeBytes { T.scanned(from: $0) }
    }

    static let fixes: [String] = [
        #"{"points":[{"lat":52.52,"lon":13.405}]}"#,
        #"{"points":[{"lon":13.405,"lat":52.52,"at":1796000000.25}]}"#,
        " {\n\t\"points\" : [ { \"lat\" : -0.5 , \"lon\" : 1E3 , \"at\" : null } , {\"lat\":1e-7,\"lon\":-180}]\r\n} ",
        #"{"points":[]}"#,
        #"{"points":[{"lat":0,"lon":0}]}"#,
        #"{"points":[{"lat":90,"lon":180.0000000000000000001}]}"#,
        #"{"points":[{"lat":52.520008123456789012345,"lon":13.404954}]}"#,
    ]

    @Test("a plain fix is read on its own, to what the decoder reads", arguments: fixes)
    func plainFixes(body: String) throws {
        let fast = try #require(scanned(MatchingAPI.Locations.self, body), "not taken: \(body)")
        #expect(fast == general(MatchingAPI.Locations.self, body))
    }

    static let leftToTheDecoder: [String] = [
        #"{"points":[{"lat":52.52,"lon":13.405,"speed":3}]}"#,  // an unknown key: ignored by the decoder
        #"{"points":[{"lat":52.52,"lon":13.405}],"points":[]}"#,  // a duplicate
        #"{"poi\u006ets":[{"lat":1,"lon":2}]}"#,  // an escape in a key
        #"{"points":[{"lat":1,"lon":2}]} x"#,
        #"{"points":[{"lat":01,"lon":2}]}"#,
        #"{"points":[{"lat":1.,"lon":2}]}"#,
        #"{"points":[{"lat":.5,"lon":2}]}"#,
        #"{"points":[{"lat":+1,"lon":2}]}"#,
        #"{"points":[{"lat":1e400,"lon":2}]}"#,
        #"{"points":[{"lat":NaN,"lon":2}]}"#,
        #"{"points":[{"lat":"1","lon":2}]}"#,
        #"{"points":[{"lat":1}]}"#,
        #"{"points":[{"lat":1,"lon":2},]}"#,
        #"{"points":{"lat":1,"lon":2}}"#,
        #"{"points":[{"lat":1,"lon":2}]"#,
        #"{}"#, "", "null", "[]",
        #"{"points":[{"lat":1e5x,"lon":2}]}"#,
    ]

    @Test("anything else is left to the decoder, which answers as it always has", arguments: leftToTheDecoder)
    func leftAlone(body: String) {
        #expect(scanned(MatchingAPI.Locations.self, body) == nil)
        switch read(MatchingAPI.Locations.self, body) {
        case .success(let value): #expect(value == general(MatchingAPI.Locations.self, body))
        case .failure(let problem):
            #expect(problem.status == .badRequest)
            #expect(general(MatchingAPI.Locations.self, body) == nil)
        }
    }

    @Test("a missing lon is still a 400 naming points[0].lon")
    func missingField() {
        guard case .failure(let problem) = read(MatchingAPI.Locations.self, #"{"points":[{"lat":1}]}"#) else {
            Issue.record("a fix without lon was accepted")
            return
        }
        #expect(problem.status == .badRequest)
        #expect(problem.field == "points[0].lon")
    }

    @Test("random fixes: written, read back on their own and by the decoder, equal")
    func roundTrips() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let point = MatchingAPI.LocationPoint(
                lat: Double.random(in: -90...90, using: &generator),
                lon: [Double.random(in: -180...180, using: &generator), 0, -0.0, 13, 1e-9, 123456789.125].randomElement()!,
                at: Bool.random() ? Double.random(in: 0...2e9, using: &generator) : nil)
            let batch = MatchingAPI.LocationBatch(drivers: [
                .init(driverID: "d-\(UInt32.random(in: 0...UInt32.max))", points: [point, point]),
                .init(driverID: "q\"uo\\te\n\u{1}é", points: []),
            ])
            let bytes = try #require(batch.jsonBytes())
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(general(MatchingAPI.LocationBatch.self, text) == batch, "\(text)")
            // Escaped ids are the decoder's to read; the plain batch is read on its own.
            let plain = MatchingAPI.LocationBatch(drivers: [batch.drivers[0]])
            let plainText = String(decoding: try #require(plain.jsonBytes()), as: UTF8.self)
            #expect(scanned(MatchingAPI.LocationBatch.self, plainText) == plain, "\(plainText)")
            #expect(try JSONBody.decode(MatchingAPI.LocationBatch.self, from: ByteBuffer(string: text)) == batch)
            let encoded = String(decoding: try JSONBody.encoder.encode(point), as: UTF8.self)
            #expect(scanned(MatchingAPI.LocationPoint.self, encoded) == point, "\(encoded)")
        }
    }

    @Test("matching's answers: written and read on their own while no entry has a problem, by the coders otherwise")
    func batchResults() throws {
        let plain = MatchingAPI.LocationBatchResult(results: [.init(status: 200, accepted: 1), .init(status: 200, accepted: 3)])
        let bytes = try #require(plain.jsonBytes())
        #expect(Array(bytes).withUnsafeBytes { MatchingAPI.LocationBatchResult.scanned(from: $0) } == plain)
        #expect(try JSONDecoder().decode(MatchingAPI.LocationBatchResult.self, from: Data(bytes)) == plain)

        let problem = ProblemDocument(
            type: "https://hailstorm.dev/problems/invalid-field", title: "Invalid field", status: 400, detail: "lat", field: "points[0].lat")
        let mixed = MatchingAPI.LocationBatchResult(results: [.init(status: 200, accepted: 1), .init(status: 400, problem: problem)])
        #expect(mixed.jsonBytes() == nil)
        let body = try JSONBody.encode(mixed)
        #expect(try JSONBody.decode(MatchingAPI.LocationBatchResult.self, from: body) == mixed)
        #expect(body.withUnsafeReadableBytes { MatchingAPI.LocationBatchResult.scanned(from: $0) } == nil)
        // A status written as 200.0 is the decoder's to judge.
        #expect(scanned(MatchingAPI.LocationBatchResult.self, #"{"results":[{"status":200.0,"accepted":1}]}"#) == nil)
    }
}
