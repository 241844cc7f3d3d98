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

    private static func randomText() -> String {
        ["d-1", "", "rider \"quoted\"", "back\\slash", "line\nbreak", "ünïcode ✓", "\u{7}bell", "matching"].randomElement()!
    }

    @Test("a trip's moves: written, read back on their own and by the decoder, equal; what the encoder writes is read on its own")
    func moves() throws {
        for _ in 0..<2_000 {
            let states = OrderState.allCases
            let move = OrderEvents.Moved(
                orderID: Self.randomText(), riderID: Self.randomText(), driverID: Bool.random() ? Self.randomText() : nil,
                offeredTo: Bool.random() ? (0..<Int.random(in: 0...3)).map { _ in Self.randomText() } : nil,
                from: states.randomElement()!, to: states.randomElement()!, at: Double.random(in: 0...2e9),
                reason: Bool.random() ? Self.randomText() : nil, fareCents: Int.random(in: -5...1_000_000),
                actor: Bool.random() ? Self.randomText() : nil)
            let bytes = try #require(move.jsonBytes())
            #expect(try JSONDecoder().decode(OrderEvents.Moved.self, from: Data(bytes)) == move, "\(String(decoding: bytes, as: UTF8.self))")
            let encoded = try JSONBody.encoder.encode(move)
            let plain = [move.orderID, move.riderID, move.driverID ?? "", move.reason ?? "", move.actor ?? ""] + (move.offeredTo ?? [])
            let scanned = Array(encoded).withUnsafeBytes { OrderEvents.Moved.scanned(from: $0) }
            if plain.allSatisfy({ !$0.contains("\"") && !$0.contains("\\") && !$0.unicodeScalars.contains { $0.value < 0x20 } }) {
                #expect(scanned == move, "\(String(decoding: encoded, as: UTF8.self))")
            } else {
                #expect(scanned == nil)  // escapes are the decoder's to read
            }
        }
        // An unknown state is the decoder's to refuse.
        #expect(scanned(OrderEvents.Moved.self, #"{"at":1,"fareCents":1,"from":"created","orderID":"o","riderID":"r","to":"teleported"}"#) == nil)
        // A move without its order is not one.
        #expect(scanned(OrderEvents.Moved.self, #"{"at":1,"fareCents":1,"from":"created","riderID":"r","to":"offered"}"#) == nil)
    }

    @Test("an order as answered: what is written reads back, by the decoder, as the order")
    func orders() throws {
        for _ in 0..<500 {
            let history = (0..<Int.random(in: 0...5)).map { _ in
                OrderAPI.Transition(
                    from: Bool.random() ? OrderState.allCases.randomElement()! : nil, to: OrderState.allCases.randomElement()!,
                    at: Double.random(in: 0...2e9), actor: Self.randomText(), reason: Bool.random() ? Self.randomText() : nil)
            }
            let order = OrderAPI.Order(
                id: Self.randomText(), riderID: Self.randomText(), driverID: Bool.random() ? Self.randomText() : nil,
                state: OrderState.allCases.randomElement()!, pickup: GeoPoint(lat: .random(in: -90...90), lon: .random(in: -180...180)),
                dropoff: GeoPoint(lat: 52.5, lon: 13), distanceKm: .random(in: 0...500), fareCents: .random(in: 0...100_000),
                surge: [1, 1.5, 2.25].randomElement()!, currency: "EUR", createdAt: .random(in: 0...2e9), updatedAt: .random(in: 0...2e9),
                history: history, dispatch: [nil, .assign, .offer].randomElement()!)
            let body = try JSONBody.encode(order)
            #expect(try JSONDecoder().decode(OrderAPI.Order.self, from: Data(body.readableBytesView)) == order)
        }
    }

    @Test("the fleet's fixes as an event: written, read back on their own and by the decoder, equal")
    func fixEvents() throws {
        for _ in 0..<500 {
            let fixes = LocationEvents.Fixes(fixes: (0..<Int.random(in: 0...20)).map { _ in
                LocationEvents.Fix(
                    driverID: "d-\(Int.random(in: 0...99_999))", lat: .random(in: -90...90), lon: .random(in: -180...180),
                    at: .random(in: 0...2e9), state: ["available", "busy", "offline"].randomElement()!)
            })
            let bytes = try #require(fixes.jsonBytes())
            #expect(try JSONDecoder().decode(LocationEvents.Fixes.self, from: Data(bytes)) == fixes)
            #expect(bytes.withUnsafeBytes { LocationEvents.Fixes.scanned(from: $0) } == fixes)
            let encoded = try JSONBody.encoder.encode(fixes)
            #expect(Array(encoded).withUnsafeBytes { LocationEvents.Fixes.scanned(from: $0) } == fixes)
        }
        // A fix without its state is the decoder's to refuse.
        #expect(scanned(LocationEvents.Fixes.self, #"{"fixes":[{"at":1,"driverID":"d","lat":1,"lon":2}]}"#) == nil)
    }
}
