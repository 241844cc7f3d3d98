/// Spreads a daily budget over the day: decides the share of eligible requests a campaign may take
/// (`passRate`), so that what it has spent follows the even line (budget × share of the day elapsed).
///
/// A plain value with the time passed in, so a test can drive a whole day through it in a moment.
/// Each run (every `ad.pacing.interval.seconds`) it estimates what the campaign would spend per second
/// with no throttling (what it spent since the last run ÷ the pass rate it had), and sets the pass rate
/// that would bring spend back onto the even line within `horizon` seconds: the rate needed is
/// (even line at now + horizon − spent) ÷ horizon. A campaign that fell behind catches up within the
/// horizon; one ahead is held back until the line reaches it. This is probabilistic throttling with a
/// model of the traffic (as LinkedIn's pacing does), re-estimated every run, so a change in traffic
/// through the day is followed within a run or two.
struct Pacer: Sendable {
    /// The share of eligible requests let through, 0…1.
    private(set) var passRate: Double
    /// Spend per second at a pass rate of 1, as last estimated (millicents per second); nil before the
    /// first estimate.
    private(set) var fullRate: Double?
    private var last: (time: Double, spent: Int, dayStart: Double)?

    /// The smallest pass rate (a campaign ahead of its line still gets a trickle, which keeps the
    /// estimate of its traffic alive).
    static let floor = 0.0005
    /// Where a campaign starts before anything is known of its traffic.
    static let initial = 0.05

    init(passRate: Double = Pacer.initial) {
        self.passRate = passRate
    }

    /// One run at `now`: `spent` of `budget` spent in the window `start..<end` (the local day, cut to
    /// the campaign's own start and end). Returns the pacing index: (share of the budget spent) ÷
    /// (share of the window elapsed); 1 is on the line, above 1 ahead of it.
    @discardableResult
    mutating func update(now: Double, spent: Int, budget: Int, start: Double, end: Double, horizon: Double) -> Double? {
        guard end > start, budget > 0 else {
            passRate = 0
            return nil
        }
        // The pass rate set by the last run was in force since then. (On a new day the estimate of the
        // traffic carries over; the spend starts again.)
        if let last, last.dayStart == start, now > last.time, passRate > 0 {
            let observed = Double(max(0, spent - last.spent)) / (now - last.time) / passRate
            // Smoothed, so one quiet or busy run does not swing the rate.
            fullRate = fullRate.map { 0.5 * $0 + 0.5 * observed } ?? observed
        }
        let length = end - start
        let elapsed = min(max(now - start, 0), length)
        let left = end - min(max(now, start), end)
        let index: Double? = elapsed > 0 ? (Double(spent) / Double(budget)) / (elapsed / length) : nil
        if spent >= budget || left <= 0 {
            passRate = 0
        } else {
            let reach = min(horizon, left)
            let line = Double(budget) * min(1, (elapsed + reach) / length)
            let needed = max(0, line - Double(spent)) / reach
            if let fullRate, fullRate > 0 {
                passRate = min(1, max(Self.floor, needed / fullRate))
            } else if last != nil {
                // Nothing spent while letting requests through: no traffic seen yet, open up.
                passRate = min(1, max(passRate * 4, Self.initial))
            }
        }
        last = (now, spent, start)
        return index
    }
}
