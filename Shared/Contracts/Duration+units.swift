/// A `Duration` in the units that timers, headers and reports take. `Duration` keeps seconds and
/// attoseconds apart; every place that needed nanoseconds or fractional seconds had its own conversion.
extension Duration {
    /// Whole nanoseconds (rounded towards zero), as NIO's `TimeAmount` and swift-metrics' timers take them.
    /// Saturates at `Int64`'s range (about 292 years) instead of trapping: a duration can come from a
    /// number someone else chose.
    public var nanosecondsValue: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflowSum) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflowSum { return seconds < 0 ? .min : .max }
        return sum
    }

    /// Whole milliseconds (rounded towards zero), as the deadline header carries them.
    public var millisecondsValue: Int64 {
        nanosecondsValue / 1_000_000
    }

    /// Seconds with their fraction, for reports and rates.
    public var secondsValue: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
