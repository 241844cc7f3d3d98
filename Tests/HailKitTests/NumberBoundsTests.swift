import Contracts
import HailKit
import NIOCore
import Testing

/// Numbers from outside are checked before arithmetic: a value that once trapped a service is a 400
/// naming its field, and the conversions that trapped saturate instead.
@Suite("numbers from outside")
struct NumberBoundsTests {
    @Test("a quote with a latitude of 1e308 is a 400 naming pickup.lat", arguments: [
        (#"{"pickup":{"lat":1e308,"lon":0},"dropoff":{"lat":0,"lon":0}}"#, "pickup.lat"),
        (#"{"pickup":{"lat":0,"lon":0},"dropoff":{"lat":0,"lon":-181}}"#, "dropoff.lon"),
        (#"{"pickup":{"lat":-90.5,"lon":0},"dropoff":{"lat":0,"lon":0}}"#, "pickup.lat"),
    ])
    func pointsOffTheEarth(body: String, field: String) throws {
        do {
            _ = try JSONBody.decode(OrderAPI.QuoteRequest.self, from: ByteBuffer(string: body))
            Issue.record("\(body) was accepted")
        } catch let problem as Problem {
            #expect(problem.status == .badRequest)
            #expect(problem.field == field)
        }
    }

    @Test("points on the earth still decode, edges included")
    func pointsOnTheEarth() throws {
        let quote = try JSONBody.decode(
            OrderAPI.QuoteRequest.self, from: ByteBuffer(string: #"{"pickup":{"lat":90,"lon":-180},"dropoff":{"lat":-90,"lon":180}}"#))
        #expect(quote.pickup == GeoPoint(lat: 90, lon: -180))
    }

    @Test("conversions saturate instead of trapping")
    func saturating() {
        #expect(Int(saturating: 1e308) == .max)
        #expect(Int(saturating: -1e308) == .min)
        #expect(Int(saturating: .nan) == 0)
        #expect(Int(saturating: 1e18 * 1000) == .max)
        #expect(Int(saturating: 12.9) == 12)
        #expect(Duration.seconds(Int64.max).nanosecondsValue == .max)
        #expect(Duration.milliseconds(99_999_999_999_999).nanosecondsValue == .max)
        #expect(Duration.milliseconds(1500).nanosecondsValue == 1_500_000_000)
        #expect(Bounds.isEpochSeconds(1e18) == false)
        #expect(Bounds.isEpochSeconds(1_800_000_000))
    }
}
