import Foundation

/// A point on the city's local plane, in kilometres east (`x`) and north (`y`) of the projection's origin.
///
/// Every distance the engine computes is the straight-line distance between two of these points: the
/// dispatch cost is a pickup distance, and the plane keeps it a subtraction and a square root.
public struct PlanePoint: Hashable, Sendable {
    public var x: Double
    public var y: Double

    @inlinable
    public init(x: Double, y: Double) {
        self.x = x
        self.y = y
    }

    /// Straight-line distance in km.
    @inlinable
    public func distance(to other: PlanePoint) -> Double {
        let dx = x - other.x
        let dy = y - other.y
        return (dx * dx + dy * dy).squareRoot()
    }

    @inlinable
    func squaredDistance(to other: PlanePoint) -> Double {
        let dx = x - other.x
        let dy = y - other.y
        return dx * dx + dy * dy
    }
}

/// A position on the earth in degrees (WGS 84), as apps send it.
public struct GeoCoordinate: Hashable, Sendable, Codable {
    public var latitude: Double
    public var longitude: Double

    public init(latitude: Double, longitude: Double) {
        self.latitude = latitude
        self.longitude = longitude
    }

    public var isValid: Bool {
        latitude.isFinite && longitude.isFinite && (-90...90).contains(latitude) && (-180...180).contains(longitude)
    }
}

/// Equirectangular projection around a city's centre: `x = R·cos(φ₀)·(λ − λ₀)`, `y = R·(φ − φ₀)`, with R the
/// earth's mean radius (6371.0088 km).
///
/// Why this one: it is two multiplications per point, it keeps north-south distances exact, and over one
/// city its error is far below the error of the GPS fixes it is fed. East-west distances are scaled by
/// `cos φ₀ / cos φ` at latitude φ. Over a 50 km city (points up to 25 km north or south of the centre,
/// |φ − φ₀| ≤ 0.225°) the relative error of a distance is at most about `tan φ₀ · |φ − φ₀|`: 0.14% at
/// 20° latitude, 0.39% at 45°, 0.68% at 60°, which is a few metres on a 1 km pickup. Distances between
/// points are then treated as straight lines on the plane (no road network).
public struct LocalProjection: Sendable, Hashable {
    public static let earthRadiusKm = 6371.0088

    public let origin: GeoCoordinate
    private let kmPerDegreeLatitude: Double
    private let kmPerDegreeLongitude: Double

    public init(origin: GeoCoordinate) {
        self.origin = origin
        let kmPerRadian = Self.earthRadiusKm
        self.kmPerDegreeLatitude = kmPerRadian * .pi / 180
        self.kmPerDegreeLongitude = kmPerRadian * .pi / 180 * cos(origin.latitude * .pi / 180)
    }

    public func project(_ coordinate: GeoCoordinate) -> PlanePoint {
        PlanePoint(
            x: (coordinate.longitude - origin.longitude) * kmPerDegreeLongitude,
            y: (coordinate.latitude - origin.latitude) * kmPerDegreeLatitude)
    }

    public func unproject(_ point: PlanePoint) -> GeoCoordinate {
        GeoCoordinate(
            latitude: origin.latitude + point.y / kmPerDegreeLatitude,
            longitude: origin.longitude + point.x / kmPerDegreeLongitude)
    }
}

/// A driver as the engine knows it. The matching service maps its account ids to these dense numbers
/// once, when a driver first comes online.
public struct DriverID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var rawValue: UInt64
    @inlinable public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "driver#\(rawValue)" }
}

/// An order as the engine knows it.
public struct OrderID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var rawValue: UInt64
    @inlinable public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "order#\(rawValue)" }
}
