@testable import Ad
import Contracts
import Foundation
import HailKitTesting
import Testing

/// A day's budget spent along the even line, the day driven by a test clock, one pacing run a minute as
/// the service runs it, with traffic that rises and falls through the day.
@Suite("ad pacing over a simulated day")
struct PacerTests {
    /// Spend (millicents) at the end of each hour of one day in Berlin: a CPM campaign bidding 100 cents
    /// (100 millicents an impression) with a daily budget of 10,000 impressions' worth, requests from
    /// 2,000 a minute at night to 8,000 at the evening peak.
    static func simulate(pacing: Bool) throws -> (hours: [Int], budget: Int, spentOutAfterMinutes: Int?) {
        let city = try #require(try Cities(specification: Cities.defaultSpecification).named("Berlin"))
        let day = city.day(of: 1_796_500_000)
        let budget = 1_000_000
        let charge = 100
        var pacer = Pacer()
        var random = SeededGenerator(42)
        var spent = 0
        var hours: [Int] = []
        var spentOut: Int?
        for minute in 0..<1440 {
            let now = day.start + Double(minute) * 60
            if pacing {
                pacer.update(now: now, spent: spent, budget: budget, start: day.start, end: day.end, horizon: 900)
            }
            let hour = Double(minute) / 60
            let requests = Int(5000 - 3000 * cos((hour - 6) / 24 * 2 * .pi))
            let rate = pacing ? pacer.passRate : 1
            for _ in 0..<requests where spent + charge <= budget {
                if Double.random(in: 0..<1, using: &random) < rate { spent += charge }
            }
            if spent + charge > budget, spentOut == nil { spentOut = minute + 1 }
            if minute % 60 == 59 { hours.append(spent) }
        }
        return (hours, budget, spentOut)
    }

    @Test("paced, the spend at every hour is within 10 % of the even line; unpaced, the budget is gone in the first minutes")
    func evenLine() throws {
        let paced = try Self.simulate(pacing: true)
        for (index, spent) in paced.hours.enumerated() {
            let line = Double(paced.budget) * Double(index + 1) / 24
            #expect(abs(Double(spent) - line) <= 0.1 * line, "hour \(index + 1): spent \(spent), even line \(Int(line))")
        }
        #expect(Double(paced.hours.last ?? 0) >= 0.95 * Double(paced.budget), "most of the budget is spent by the day's end")

        let unpaced = try Self.simulate(pacing: false)
        #expect(unpaced.hours.first == unpaced.budget)
        #expect((unpaced.spentOutAfterMinutes ?? .max) <= 10)
    }

    @Test("a campaign ahead of its line is held back to a trickle, and one with no traffic yet opens up")
    func aheadAndQuiet() {
        var ahead = Pacer(passRate: 1)
        ahead.update(now: 0, spent: 0, budget: 1000, start: 0, end: 86_400, horizon: 900)
        // Half the day's budget in the first minute.
        let index = ahead.update(now: 60, spent: 500, budget: 1000, start: 0, end: 86_400, horizon: 900)
        #expect((index ?? 0) > 100)
        #expect(ahead.passRate == Pacer.floor)

        var quiet = Pacer()
        for minute in 0..<4 { quiet.update(now: Double(minute) * 60, spent: 0, budget: 1000, start: 0, end: 86_400, horizon: 900) }
        #expect(quiet.passRate == 1)
        var spent = Pacer()
        spent.update(now: 0, spent: 1000, budget: 1000, start: 0, end: 86_400, horizon: 900)
        #expect(spent.passRate == 0)
    }
}

/// An impression's event is written by hand (`AdLedger.payload`), not encoded: what the recorder decodes
/// from it must be the event, whatever its strings hold.
@Suite("ads: the counted event as written")
struct AdPayloadTests {
    @Test("decodes to the event, with quotes, backslashes, control characters and non-ASCII in its strings")
    func decodesToTheEvent() throws {
        for event in [
            AdEvents.Counted(tokenID: "t1", campaignID: "c1", userID: "u1", placement: "rider.waiting", chargedMillicents: 100, at: 1_796_455_750.411),
            AdEvents.Counted(
                tokenID: "t\"2\\", campaignID: "c/2\n\t\u{01}", userID: "rider é 乘车 🚕", placement: "driver.idle", chargedMillicents: 0, at: 0),
        ] {
            #expect(try JSONDecoder().decode(AdEvents.Counted.self, from: Data(AdLedger.payload(of: event))) == event)
        }
    }
}
