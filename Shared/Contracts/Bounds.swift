/// The ranges numbers from outside (requests, headers, configuration, events, stored rows) must fall in
/// before any arithmetic, and conversions that cannot trap.
///
/// Swift traps on an overflowing `Int` conversion or multiplication; a service that converts a number a
/// client sent without checking it can be stopped by one request. Every such number is checked against
/// one of these ranges (a 400 naming the field when it is outside), and conversions from `Double` go
/// through `Int(saturating:)`.
public enum Bounds {
    /// Times in seconds since 1970 that Hailstorm accepts: from 1970 to the start of 2100.
    public static let epochSeconds: ClosedRange<Double> = 0...4_102_444_800
    /// Latitudes in degrees.
    public static let latitude: ClosedRange<Double> = -90...90
    /// Longitudes in degrees.
    public static let longitude: ClosedRange<Double> = -180...180

    /// Whether `value` is a finite time in `epochSeconds`.
    public static func isEpochSeconds(_ value: Double) -> Bool {
        value.isFinite && epochSeconds.contains(value)
    }
}

extension Int {
    /// `value` rounded towards zero and clamped to `Int`'s range; NaN is 0. Never traps.
    public init(saturating value: Double) {
        if value.isNaN {
            self = 0
        } else if value >= 9.2e18 {
            self = .max
        } else if value <= -9.2e18 {
            self = .min
        } else {
            self = Int(value)
        }
    }
}
