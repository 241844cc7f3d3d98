/// A `Duration` in the units that timers, headers and reports take. `Duration` keeps seconds and
/// attoseconds apart; every place that needed nanoseconds or fractional seconds had its own conversion.
extension Duration {
    /// Whole nanoseconds (rounded towards zero), as NIO's `TimeAmount` and swift-metrics' timers take them.
    public var nanosecondsValue: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
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
