import Foundation

/// The analytics service: the platform's figures by minute, city and hexagonal cell, kept from every
/// stream, and each trip's driven path read for detours. Times are seconds since 1970; money in cents.
/// Every read is admin-only; a range is `from` (inclusive) to `to` (exclusive).
public enum AnalyticsAPI {
    public static let service = "analytics"

    /// `?from=&to=&step=minute|hour&city=&cell=`: the figures over the range, and per step.
    public static let kpis = Endpoint<NoContent, KPIs>(service: service, .get, "/v1/kpis")
    /// `?from=&to=&city=`: the orders created in the range, step by step through the state machine.
    public static let funnel = Endpoint<NoContent, Funnel>(service: service, .get, "/v1/funnel")
    /// `?kind=pickups|dropoffs|supply|demand&from=&to=&city=`: cells with their value, as GeoJSON.
    public static let heatmap = Endpoint<NoContent, Heatmap>(service: service, .get, "/v1/heatmap")
    /// `?tolerance=` (metres, 25): the trip's driven line, its simplification, stay points, metrics, flags.
    public static let tripPath = Endpoint<NoContent, TripPath>(service: service, .get, "/v1/trips/{id}/path")
    /// `?from=&to=`: the trips completed in the range that were flagged.
    public static let anomalies = Endpoint<NoContent, AnomalyList>(service: service, .get, "/v1/anomalies")
    /// `?from=&to=&top=` (10): the busiest pairs of pickup and drop-off cells.
    public static let od = Endpoint<NoContent, Flows>(service: service, .get, "/v1/od")
    /// Empties analytics' tables and reads every stream again from its start; the same figures follow.
    public static let rebuild = Endpoint<NoContent, Rebuilt>(service: service, .post, "/v1/rebuild", isIdempotent: true)

    public struct Rebuilt: Codable, Sendable, Hashable {
        /// Events read from the streams.
        public var events: Int
        public var seconds: Double

        public init(events: Int, seconds: Double) {
            self.events = events
            self.seconds = seconds
        }
    }

    /// How a duration is spread (seconds), from a histogram with 2 % wide buckets.
    public struct Percentiles: Codable, Sendable, Hashable {
        public var count: Int
        public var p50: Double
        public var p90: Double
        public var p99: Double

        public init(count: Int, p50: Double, p90: Double, p99: Double) {
            self.count = count
            self.p50 = p50
            self.p90 = p90
            self.p99 = p99
        }
    }

    /// Cancellations by who cancelled and by the state the order was in.
    public struct Cancellations: Codable, Sendable, Hashable {
        public var total: Int = 0
        public var byRider: Int = 0
        public var byDriver: Int = 0
        /// An admin, an operator or a service.
        public var byPlatform: Int = 0
        /// The state the order left: `created`, `offered`, `assigned`, `arriving`.
        public var inState: [String: Int] = [:]

        public init() {}
    }

    /// The figures of a range (or one step of it).
    public struct Figures: Codable, Sendable, Hashable {
        public var quotes = 0
        public var orders = 0
        /// orders ÷ quotes, when there were quotes.
        public var quoteConversion: Double?
        /// Orders offered to drivers (or handed to one) in the range.
        public var offered = 0
        public var assigned = 0
        /// assigned ÷ orders, when there were orders.
        public var matchRate: Double?
        /// created → assigned.
        public var timeToAssign: Percentiles?
        /// assigned → arriving (the driver at the pickup).
        public var pickupTime: Percentiles?
        /// in_trip → completed.
        public var tripTime: Percentiles?
        public var cancellations = Cancellations()
        public var expired = 0
        public var completed = 0
        public var paid = 0
        /// The fares of the payments made.
        public var gmvCents = 0
        /// What coupons took off those fares.
        public var couponSubsidyCents = 0
        public var commissionCents = 0
        /// Riders who asked for a quote or ordered; drivers who sent a fix.
        public var activeRiders = 0
        public var activeDrivers = 0
        /// Available drivers (driver-minutes seen available ÷ minutes of the range).
        public var supply = 0.0
        /// Orders created, i.e. riders waiting for a driver.
        public var demand = 0
        public var ordersUnderSurge = 0
        public var surgeShare: Double?
        public var couponClaims = 0
        public var adImpressions = 0
        public var adClicks = 0
        public var adSpendMillicents = 0

        public init() {}
    }

    public struct KPIStep: Codable, Sendable, Hashable {
        public var start: Double
        public var figures: Figures

        public init(start: Double, figures: Figures) {
            self.start = start
            self.figures = figures
        }
    }

    public struct KPIs: Codable, Sendable, Hashable {
        public var from: Double
        public var to: Double
        /// `minute` or `hour`.
        public var step: String
        public var city: String?
        public var cell: String?
        public var total: Figures
        public var steps: [KPIStep]

        public init(from: Double, to: Double, step: String, city: String?, cell: String?, total: Figures, steps: [KPIStep]) {
            self.from = from
            self.to = to
            self.step = step
            self.city = city
            self.cell = cell
            self.total = total
            self.steps = steps
        }
    }

    public struct FunnelStep: Codable, Sendable, Hashable {
        /// `quote`, `order`, `offered`, `assigned`, `arriving`, `in_trip`, `completed`, `paid`.
        public var step: String
        public var count: Int
        /// The share of the step before that did not reach this one (nil for the first step, or when
        /// the step before had none).
        public var dropOff: Double?

        public init(step: String, count: Int, dropOff: Double?) {
            self.step = step
            self.count = count
            self.dropOff = dropOff
        }
    }

    public struct Funnel: Codable, Sendable, Hashable {
        public var from: Double
        public var to: Double
        public var city: String?
        public var steps: [FunnelStep]

        public init(from: Double, to: Double, city: String?, steps: [FunnelStep]) {
            self.from = from
            self.to = to
            self.city = city
            self.steps = steps
        }
    }

    /// A cell of a heatmap.
    public struct CellValue: Codable, Sendable, Hashable {
        public var cell: String
        public var city: String
        public var value: Double

        public init(cell: String, city: String, value: Double) {
            self.cell = cell
            self.city = city
            self.value = value
        }
    }

    /// A GeoJSON FeatureCollection of hexagons, with the kind and range as foreign members.
    public struct Heatmap: Codable, Sendable, Hashable {
        public var type = "FeatureCollection"
        public var kind: String
        public var from: Double
        public var to: Double
        /// The cells' edge in metres.
        public var edgeMeters: Double
        public var features: [GeoJSON.Feature<CellValue>]

        public init(kind: String, from: Double, to: Double, edgeMeters: Double, features: [GeoJSON.Feature<CellValue>]) {
            self.kind = kind
            self.from = from
            self.to = to
            self.edgeMeters = edgeMeters
            self.features = features
        }
    }

    /// A place where a driver stayed: within the stay radius for at least the stay time.
    public struct StayPoint: Codable, Sendable, Hashable {
        public var lat: Double
        public var lon: Double
        public var from: Double
        public var to: Double
        public var seconds: Double { to - from }

        public init(lat: Double, lon: Double, from: Double, to: Double) {
            self.lat = lat
            self.lon = lon
            self.from = from
            self.to = to
        }

        private enum CodingKeys: String, CodingKey { case lat, lon, from, to }
    }

    /// What the path of a trip says.
    public struct PathMetrics: Codable, Sendable, Hashable {
        public var fixes: Int
        public var simplifiedPoints: Int
        public var toleranceMeters: Double
        /// Along the fixes from the start of the trip (in_trip) to its end; the whole path when the
        /// trip never started.
        public var drivenKm: Double
        /// Pickup to drop-off, as the crow flies.
        public var directKm: Double
        /// drivenKm ÷ directKm (nil for a trip with no direct distance).
        public var detourRatio: Double?
        /// The farthest the trip went from the straight line between pickup and drop-off.
        public var maxOffCorridorKm: Double
        /// The last fix's distance from the drop-off.
        public var endToDropoffKm: Double?
        public var longestStopSeconds: Double

        public init(
            fixes: Int, simplifiedPoints: Int, toleranceMeters: Double, drivenKm: Double, directKm: Double, detourRatio: Double?,
            maxOffCorridorKm: Double, endToDropoffKm: Double?, longestStopSeconds: Double
        ) {
            self.fixes = fixes
            self.simplifiedPoints = simplifiedPoints
            self.toleranceMeters = toleranceMeters
            self.drivenKm = drivenKm
            self.directKm = directKm
            self.detourRatio = detourRatio
            self.maxOffCorridorKm = maxOffCorridorKm
            self.endToDropoffKm = endToDropoffKm
            self.longestStopSeconds = longestStopSeconds
        }
    }

    /// A trip's path and what was found in it.
    public struct TripAnalysis: Codable, Sendable, Hashable {
        public var orderID: String
        public var driverID: String?
        public var state: String
        public var assignedAt: Double?
        public var startedAt: Double?
        public var completedAt: Double?
        public var metrics: PathMetrics
        /// `route-deviation`, `long-stop`, `ended-away-from-dropoff`, `ended-early`.
        public var flags: [String]
        public var stays: [StayPoint]

        public init(
            orderID: String, driverID: String?, state: String, assignedAt: Double?, startedAt: Double?, completedAt: Double?,
            metrics: PathMetrics, flags: [String], stays: [StayPoint]
        ) {
            self.orderID = orderID
            self.driverID = driverID
            self.state = state
            self.assignedAt = assignedAt
            self.startedAt = startedAt
            self.completedAt = completedAt
            self.metrics = metrics
            self.flags = flags
            self.stays = stays
        }
    }

    /// Which line of a trip a feature is.
    public struct PathPart: Codable, Sendable, Hashable {
        /// `driven`, `simplified`, `direct` or `stay`.
        public var part: String
        /// For a stay: when it began and ended.
        public var from: Double?
        public var to: Double?

        public init(part: String, from: Double? = nil, to: Double? = nil) {
            self.part = part
            self.from = from
            self.to = to
        }
    }

    /// GeoJSON: the driven line, the simplified line, the direct line and the stay points, with the
    /// analysis as a foreign member.
    public struct TripPath: Codable, Sendable, Hashable {
        public var type = "FeatureCollection"
        public var trip: TripAnalysis
        public var features: [GeoJSON.Feature<PathPart>]

        public init(trip: TripAnalysis, features: [GeoJSON.Feature<PathPart>]) {
            self.trip = trip
            self.features = features
        }
    }

    public struct AnomalyList: Codable, Sendable, Hashable {
        public var from: Double
        public var to: Double
        public var trips: [TripAnalysis]

        public init(from: Double, to: Double, trips: [TripAnalysis]) {
            self.from = from
            self.to = to
            self.trips = trips
        }
    }

    public struct Flow: Codable, Sendable, Hashable {
        public var city: String
        public var fromCell: String
        public var toCell: String
        public var fromCentre: GeoPoint
        public var toCentre: GeoPoint
        public var trips: Int

        public init(city: String, fromCell: String, toCell: String, fromCentre: GeoPoint, toCentre: GeoPoint, trips: Int) {
            self.city = city
            self.fromCell = fromCell
            self.toCell = toCell
            self.fromCentre = fromCentre
            self.toCentre = toCentre
            self.trips = trips
        }
    }

    /// Orders created in the range, by pickup cell and drop-off cell.
    public struct Flows: Codable, Sendable, Hashable {
        public var from: Double
        public var to: Double
        public var flows: [Flow]

        public init(from: Double, to: Double, flows: [Flow]) {
            self.from = from
            self.to = to
            self.flows = flows
        }
    }
}

/// The GeoJSON shapes analytics answers with (RFC 7946: positions are `[lon, lat]`).
public enum GeoJSON {
    public enum Geometry: Codable, Sendable, Hashable {
        case point(GeoPoint)
        case lineString([GeoPoint])
        /// One ring, closed (its last position is its first).
        case polygon([GeoPoint])

        private enum CodingKeys: String, CodingKey { case type, coordinates }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            switch self {
            case .point(let point):
                try container.encode("Point", forKey: .type)
                try container.encode([point.lon, point.lat], forKey: .coordinates)
            case .lineString(let points):
                try container.encode("LineString", forKey: .type)
                try container.encode(points.map { [$0.lon, $0.lat] }, forKey: .coordinates)
            case .polygon(let ring):
                try container.encode("Polygon", forKey: .type)
                try container.encode([ring.map { [$0.lon, $0.lat] }], forKey: .coordinates)
            }
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            func point(_ position: [Double]) throws -> GeoPoint {
                guard position.count >= 2 else {
                    throw DecodingError.dataCorruptedError(forKey: .coordinates, in: container, debugDescription: "a position is [lon, lat]")
                }
                return GeoPoint(lat: position[1], lon: position[0])
            }
            switch try container.decode(String.self, forKey: .type) {
            case "Point": self = .point(try point(try container.decode([Double].self, forKey: .coordinates)))
            case "LineString": self = .lineString(try container.decode([[Double]].self, forKey: .coordinates).map(point))
            case "Polygon":
                let rings = try container.decode([[[Double]]].self, forKey: .coordinates)
                self = .polygon(try (rings.first ?? []).map(point))
            case let other:
                throw DecodingError.dataCorruptedError(forKey: .type, in: container, debugDescription: "unknown geometry \(other)")
            }
        }
    }

    public struct Feature<Properties: Codable & Sendable & Hashable>: Codable, Sendable, Hashable {
        public var type = "Feature"
        public var geometry: Geometry
        public var properties: Properties

        public init(geometry: Geometry, properties: Properties) {
            self.geometry = geometry
            self.properties = properties
        }
    }
}

/// The fixes matching accepted from drivers, for analytics to rebuild each trip's path. Published in
/// batches (one stream entry per batch, every `matching.location.publish.ms`), every accepted fix.
public enum LocationEvents {
    public struct Fix: Codable, Sendable, Hashable {
        public var driverID: String
        public var lat: Double
        public var lon: Double
        /// When the phone took it (the time the driver sent, or the time it arrived).
        public var at: Double
        /// The driver's state when it arrived: `available`, `busy` or `offline`.
        public var state: String

        public init(driverID: String, lat: Double, lon: Double, at: Double, state: String) {
            self.driverID = driverID
            self.lat = lat
            self.lon = lon
            self.at = at
            self.state = state
        }
    }

    public struct Fixes: DomainEvent, Hashable {
        public static let stream = "driver.location"
        public static let type = "driver.fixes"
        public var fixes: [Fix]

        public init(fixes: [Fix]) {
            self.fixes = fixes
        }
    }
}

/// Quotes given, in batches: a quote is a read that stores nothing, so the order service tallies them
/// and publishes what it gave every second (what a crash loses is that second's tally).
public enum QuoteEvents {
    public struct Quote: Codable, Sendable, Hashable {
        public var riderID: String
        public var lat: Double
        public var lon: Double
        public var at: Double
        public var surge: Double

        public init(riderID: String, lat: Double, lon: Double, at: Double, surge: Double) {
            self.riderID = riderID
            self.lat = lat
            self.lon = lon
            self.at = at
            self.surge = surge
        }
    }

    public struct Given: DomainEvent, Hashable {
        public static let stream = "order.quotes"
        public static let type = "order.quotes"
        public var quotes: [Quote]

        public init(quotes: [Quote]) {
            self.quotes = quotes
        }
    }
}

// MARK: The fleet's fixes as events, read and written on their own (`ScannableJSON`, `WritableJSON`).

extension LocationEvents.Fixes: ScannableJSON, WritableJSON {
    private static let fixKeys: [StaticString] = ["at", "driverID", "lat", "lon", "state"]

    public init?(scanning scanner: inout JSONScanner) {
        var fixes: [LocationEvents.Fix]? = nil
        guard scanner.object(["fixes"], { _, scanner in
            fixes = scanner.array { scanner -> LocationEvents.Fix? in
                var at = 0.0, lat = 0.0, lon = 0.0, driver = "", state = ""
                guard scanner.object(Self.fixKeys, { key, scanner in
                    switch key {
                    case 1, 4:
                        guard let value = scanner.string() else { return false }
                        if key == 1 { driver = value } else { state = value }
                    default:
                        guard let value = scanner.number() else { return false }
                        if key == 0 { at = value } else if key == 2 { lat = value } else { lon = value }
                    }
                    return true
                }) == 0b11111 else { return nil }
                return LocationEvents.Fix(driverID: driver, lat: lat, lon: lon, at: at, state: state)
            }
            return fixes != nil
        }) == 1, let fixes else { return nil }
        self.init(fixes: fixes)
    }

    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{\"fixes\":[")
        for (index, fix) in fixes.enumerated() {
            writer.raw(index > 0 ? ",{\"at\":" : "{\"at\":")
            guard writer.number(fix.at) else { return false }
            writer.key("driverID")
            writer.string(fix.driverID)
            writer.key("lat")
            guard writer.number(fix.lat) else { return false }
            writer.key("lon")
            guard writer.number(fix.lon) else { return false }
            writer.key("state")
            writer.string(fix.state)
            writer.raw("}")
        }
        writer.raw("]}")
        return true
    }
}
