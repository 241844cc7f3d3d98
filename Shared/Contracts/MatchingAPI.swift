import Foundation

/// The matching service: where drivers are, who is available, and dispatch.
public enum MatchingAPI {
    public static let service = "matching"

    /// The shard of a matching service split by city (`matching.cities`, one instance per city, the k-th
    /// city's instance owning shard k) that dispatches at `point`: the city whose centre is nearest.
    public static func shard(of point: GeoPoint, in cities: CityCircles) -> Int {
        cities.nearest(to: point)
    }

    /// The shard of a matching service split by city that takes a driver's fixes: the city of the latest
    /// (`latest`); nil when there is none, or it is no place on earth (the instance asked refuses it).
    public static func shard(ofFixes points: [LocationPoint], in cities: CityCircles) -> Int? {
        guard let latest = latest(points) else { return nil }
        let point = GeoPoint(lat: latest.lat, lon: latest.lon)
        return point.isValid ? shard(of: point, in: cities) : nil
    }

    /// The latest of a driver's fixes (by `at`; without times, the last one sent): where the driver is.
    public static func latest(_ points: [LocationPoint]) -> LocationPoint? {
        points.enumerated().max { a, b in (a.element.at ?? Double(a.offset)) < (b.element.at ?? Double(b.offset)) }?.element
    }

    /// One GPS fix; `at` in seconds since 1970 (optional: the time it arrives otherwise).
    public struct LocationPoint: Codable, Sendable, Hashable {
        public var lat: Double
        public var lon: Double
        public var at: Double?

        public init(lat: Double, lon: Double, at: Double? = nil) {
            self.lat = lat
            self.lon = lon
            self.at = at
        }
    }

    /// Fixes a driver's app collected since its last send, in any order; the latest counts.
    public struct Locations: Codable, Sendable, Hashable {
        public var points: [LocationPoint]

        public init(points: [LocationPoint]) {
            self.points = points
        }
    }

    public struct LocationsAccepted: Codable, Sendable, Hashable {
        public var accepted: Int

        public init(accepted: Int) {
            self.accepted = accepted
        }
    }

    /// Many drivers' fixes in one call (services only): the gateway gathers the `POST /driver/locations`
    /// that reach it within a few milliseconds and hands them over together, so that a fleet's fixes,
    /// the platform's most frequent request, cost matching one request per batch instead of one each.
    public struct LocationBatch: Codable, Sendable, Hashable {
        public struct Entry: Codable, Sendable, Hashable {
            public var driverID: String
            public var points: [LocationPoint]

            public init(driverID: String, points: [LocationPoint]) {
                self.driverID = driverID
                self.points = points
            }
        }

        public var drivers: [Entry]

        public init(drivers: [Entry]) {
            self.drivers = drivers
        }
    }

    /// What each entry of a `LocationBatch` got, in the batch's order: `accepted` (status 200), or the
    /// problem the driver's own call would have been answered with.
    public struct LocationBatchResult: Codable, Sendable, Hashable {
        public struct Outcome: Codable, Sendable, Hashable {
            public var status: Int
            public var accepted: Int?
            public var problem: ProblemDocument?

            public init(status: Int, accepted: Int? = nil, problem: ProblemDocument? = nil) {
                self.status = status
                self.accepted = accepted
                self.problem = problem
            }
        }

        public var results: [Outcome]

        public init(results: [Outcome]) {
            self.results = results
        }
    }

    /// Going online; the position may come with it or from the last fix.
    public struct GoOnline: Codable, Sendable, Hashable {
        public var lat: Double?
        public var lon: Double?

        public init(lat: Double? = nil, lon: Double? = nil) {
            self.lat = lat
            self.lon = lon
        }
    }

    public struct DriverStatus: Codable, Sendable, Hashable {
        /// A driver as matching split by city knows them: each city's instance answers for the driver,
        /// and the one where the driver is says the most (on a trip, then available, then suspended, then
        /// offline — what an instance that never saw the driver answers).
        public static func merged(_ answers: [DriverStatus]) -> DriverStatus {
            func rank(_ state: String) -> Int {
                switch state {
                case "busy": 4
                case "available": 3
                case "suspended": 2
                default: 1
                }
            }
            var best = answers[0]
            for answer in answers.dropFirst() where rank(answer.state) > rank(best.state) || (best.lat == nil && answer.lat != nil && rank(answer.state) == rank(best.state)) {
                best = answer
            }
            return best
        }

        public var driverID: String
        /// `available`, `busy`, `offline` or `suspended` (by an operator: not dispatched until restored;
        /// a trip already under way goes on).
        public var state: String
        public var lat: Double?
        public var lon: Double?

        public init(driverID: String, state: String, lat: Double?, lon: Double?) {
            self.driverID = driverID
            self.state = state
            self.lat = lat
            self.lon = lon
        }
    }

    public struct DriverList: Codable, Sendable {
        public var drivers: [DriverStatus]

        public init(drivers: [DriverStatus]) {
            self.drivers = drivers
        }

        /// Every city's drivers online, of matching split by city.
        public static func merged(_ lists: [DriverList]) -> DriverList {
            DriverList(drivers: lists.flatMap(\.drivers))
        }
    }

    /// What dispatch has done since this instance started.
    public struct DispatchStats: Codable, Sendable, Hashable {
        /// `assign` or `offer`.
        public var mode: String
        public var driversKnown: Int
        public var driversAvailable: Int
        public var ordersWaiting: Int
        public var windows: Int
        public var assigned: Int
        public var offered: Int
        public var deferred: Int
        public var meanPickupKm: Double?

        /// Every city's figures of matching split by city, added up (the mean pickup weighed by assignments).
        public static func merged(_ all: [DispatchStats]) -> DispatchStats {
            var total = DispatchStats(
                mode: all.first?.mode ?? "", driversKnown: 0, driversAvailable: 0, ordersWaiting: 0, windows: 0, assigned: 0, offered: 0,
                deferred: 0, meanPickupKm: nil)
            var pickupKm = 0.0
            var weighed = 0
            for stats in all {
                total.driversKnown += stats.driversKnown
                total.driversAvailable += stats.driversAvailable
                total.ordersWaiting += stats.ordersWaiting
                total.windows += stats.windows
                total.assigned += stats.assigned
                total.offered += stats.offered
                total.deferred += stats.deferred
                if let mean = stats.meanPickupKm {
                    pickupKm += mean * Double(stats.assigned)
                    weighed += stats.assigned
                }
            }
            total.meanPickupKm = weighed > 0 ? pickupKm / Double(weighed) : nil
            return total
        }

        public init(
            mode: String, driversKnown: Int, driversAvailable: Int, ordersWaiting: Int, windows: Int, assigned: Int,
            offered: Int, deferred: Int, meanPickupKm: Double?
        ) {
            self.mode = mode
            self.driversKnown = driversKnown
            self.driversAvailable = driversAvailable
            self.ordersWaiting = ordersWaiting
            self.windows = windows
            self.assigned = assigned
            self.offered = offered
            self.deferred = deferred
            self.meanPickupKm = meanPickupKm
        }
    }

    /// An order waiting for a driver (or offered, waiting for a grab), as dispatch holds it.
    public struct WaitingOrder: Codable, Sendable, Hashable {
        public var orderID: String
        public var pickup: GeoPoint
        public var createdAt: Double
        /// `waiting` or `offered`.
        public var state: String

        public init(orderID: String, pickup: GeoPoint, createdAt: Double, state: String) {
            self.orderID = orderID
            self.pickup = pickup
            self.createdAt = createdAt
            self.state = state
        }
    }

    public struct WaitingOrders: Codable, Sendable {
        /// The oldest first, at most `limit` (500).
        public var orders: [WaitingOrder]
        /// How many there are in all.
        public var total: Int

        public init(orders: [WaitingOrder], total: Int) {
            self.orders = orders
            self.total = total
        }

        /// Every city's waiting orders of matching split by city, the oldest `limit` of them.
        public static func merged(_ lists: [WaitingOrders], limit: Int) -> WaitingOrders {
            let orders = lists.flatMap(\.orders).sorted { a, b in a.createdAt != b.createdAt ? a.createdAt < b.createdAt : a.orderID < b.orderID }
            return WaitingOrders(orders: Array(orders.prefix(limit)), total: lists.reduce(0) { $0 + $1.total })
        }
    }

    public static let locations = Endpoint<Locations, LocationsAccepted>(
        service: service, .post, "/v1/drivers/{id}/locations", isIdempotent: true)
    /// At most `locationBatchLimit` drivers a call.
    public static let locationBatch = Endpoint<LocationBatch, LocationBatchResult>(
        service: service, .post, "/v1/locations/batch", isIdempotent: true)
    public static let locationBatchLimit = 2000
    public static let online = Endpoint<GoOnline, DriverStatus>(service: service, .post, "/v1/drivers/{id}/online", isIdempotent: true)
    public static let offline = Endpoint<NoContent, DriverStatus>(service: service, .post, "/v1/drivers/{id}/offline", isIdempotent: true)
    public static let driver = Endpoint<NoContent, DriverStatus>(service: service, .get, "/v1/drivers/{id}")
    public static let stats = Endpoint<NoContent, DispatchStats>(service: service, .get, "/v1/stats")
    /// Every driver online now (admins and services): the command centre's map.
    public static let drivers = Endpoint<NoContent, DriverList>(service: service, .get, "/v1/drivers")
    /// Takes a driver out of dispatch (admin): not offered nor assigned anything, offers standing to them
    /// withdrawn, refused going online, until restored. Repeating it changes nothing.
    public static let suspend = Endpoint<NoContent, DriverStatus>(service: service, .post, "/v1/drivers/{id}/suspend", isIdempotent: true)
    public static let restore = Endpoint<NoContent, DriverStatus>(service: service, .post, "/v1/drivers/{id}/restore", isIdempotent: true)
    /// Orders waiting for dispatch (admin, service); `?limit=` (500, at most 5000).
    public static let waiting = Endpoint<NoContent, WaitingOrders>(service: service, .get, "/v1/orders/waiting")
    /// An offered order back to dispatch now (service, admin): its standing offers are dropped and the next
    /// window offers it to the nearest free drivers. Order-grab sends it when a race's winner turns out
    /// to be on another trip: the drivers told "taken" while that was checked have let the offer go, and
    /// would otherwise leave the order waiting for its offer to lapse. An order not offered (waiting
    /// already, assigned, ended) stays as it is, so repeating it changes nothing.
    public static let redispatch = Endpoint<NoContent, NoContent>(
        service: service, .post, "/v1/orders/{id}/redispatch", successStatus: .noContent, isIdempotent: true)
}

/// The order-grab service: drivers racing for an offered order.
public enum GrabAPI {
    public static let service = "order-grab"

    /// Matching opens an order for grabbing by these drivers until `expiresAt` (service role).
    public struct OpenOffer: Codable, Sendable, Hashable {
        public var orderID: String
        public var driverIDs: [String]
        public var expiresAt: Double

        public init(orderID: String, driverIDs: [String], expiresAt: Double) {
            self.orderID = orderID
            self.driverIDs = driverIDs
            self.expiresAt = expiresAt
        }
    }

    /// A dispatch window's offers, opened together.
    public struct OpenOffers: Codable, Sendable, Hashable {
        public var offers: [OpenOffer]

        public init(offers: [OpenOffer]) {
            self.offers = offers
        }
    }

    /// Drivers who may no longer grab an offer (a suspended driver's).
    public struct Withdrawal: Codable, Sendable, Hashable {
        public var driverIDs: [String]

        public init(driverIDs: [String]) {
            self.driverIDs = driverIDs
        }
    }

    /// A won grab: the order is the driver's.
    public struct Won: Codable, Sendable, Hashable {
        public var orderID: String
        public var driverID: String
        public var at: Double

        public init(orderID: String, driverID: String, at: Double) {
            self.orderID = orderID
            self.driverID = driverID
            self.at = at
        }
    }

    /// One attempt, as the audit keeps it. `outcome`: `won`, `taken`, `not-offered`, `offer-ended`,
    /// `order-closed`, `driver-busy` (won, and refused by the order service), `unjudged` (won, and the
    /// order service gave no answer: the driver was answered 503/504 and the race opened again).
    public struct Attempt: Codable, Sendable, Hashable {
        public var driverID: String
        public var outcome: String
        public var at: Double

        public init(driverID: String, outcome: String, at: Double) {
            self.driverID = driverID
            self.outcome = outcome
            self.at = at
        }
    }

    public struct Audit: Codable, Sendable {
        public var orderID: String
        public var attempts: [Attempt]

        public init(orderID: String, attempts: [Attempt]) {
            self.orderID = orderID
            self.attempts = attempts
        }
    }

    public static let open = Endpoint<OpenOffer, NoContent>(service: service, .post, "/v1/offers", successStatus: .noContent, isIdempotent: true)
    /// A dispatch window's races opened in one call (service role): up to 500, all or none.
    public static let openBatch = Endpoint<OpenOffers, NoContent>(
        service: service, .post, "/v1/offers/batch", successStatus: .noContent, isIdempotent: true)
    /// 200 won (also when the same driver asks again); 409 `taken` to every other driver.
    public static let grab = Endpoint<NoContent, Won>(service: service, .post, "/v1/offers/{id}/grab")
    public static let audit = Endpoint<NoContent, Audit>(service: service, .get, "/v1/offers/{id}/audit")
    /// Takes drivers off an open offer (service role); an offer that has ended is left alone.
    public static let withdraw = Endpoint<Withdrawal, NoContent>(
        service: service, .post, "/v1/offers/{id}/withdraw", successStatus: .noContent, isIdempotent: true)
}

/// What the gateway pushes to a rider's or driver's WebSocket: an order event, in words an app shows.
public struct PushMessage: Codable, Sendable, Hashable {
    /// The event type: `order.offered` (to each driver offered it), `order.assigned`, `order.arriving`,
    /// `order.in_trip`, `order.completed`, `order.cancelled`, `order.expired`.
    public var type: String
    public var orderID: String
    public var state: OrderState
    public var riderID: String
    public var driverID: String?
    public var at: Double
    public var reason: String?

    public init(type: String, orderID: String, state: OrderState, riderID: String, driverID: String?, at: Double, reason: String?) {
        self.type = type
        self.orderID = orderID
        self.state = state
        self.riderID = riderID
        self.driverID = driverID
        self.at = at
        self.reason = reason
    }

    /// The Redis pub/sub channel of one user's pushes; a gateway instance subscribes to it while the user
    /// has a socket there, and writes what comes to those sockets.
    public static func channel(user: String) -> String { "push:user:\(user)" }
}

// MARK: Fixes read and written on their own (`ScannableJSON`, `WritableJSON`): the fleet's bodies.

extension MatchingAPI.LocationPoint: ScannableJSON, WritableJSON {
    private static let keys: [StaticString] = ["at", "lat", "lon"]

    public init?(scanning scanner: inout JSONScanner) {
        var lat = 0.0, lon = 0.0
        var at: Double? = nil
        let seen = scanner.object(Self.keys) { key, scanner in
            switch key {
            case 0:
                if scanner.takeNull() { return true }
                at = scanner.number()
                return at != nil
            case 1:
                guard let value = scanner.number() else { return false }
                lat = value
                return true
            default:
                guard let value = scanner.number() else { return false }
                lon = value
                return true
            }
        }
        // lat and lon are required: without them the general decoder says which is missing.
        guard let seen, seen & 0b110 == 0b110 else { return nil }
        self.init(lat: lat, lon: lon, at: at)
    }

    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{")
        if let at {
            writer.raw("\"at\":")
            guard writer.number(at) else { return false }
            writer.raw(",")
        }
        writer.raw("\"lat\":")
        guard writer.number(lat) else { return false }
        writer.raw(",\"lon\":")
        guard writer.number(lon) else { return false }
        writer.raw("}")
        return true
    }
}

extension MatchingAPI.Locations: ScannableJSON, WritableJSON {
    public init?(scanning scanner: inout JSONScanner) {
        var points: [MatchingAPI.LocationPoint]? = nil
        guard scanner.object(["points"], { _, scanner in
            points = scanner.array { MatchingAPI.LocationPoint(scanning: &$0) }
            return points != nil
        }) == 1, let points else { return nil }
        self.init(points: points)
    }

    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{\"points\":")
        guard Self.write(points, to: &writer) else { return false }
        writer.raw("}")
        return true
    }

    static func write(_ points: [MatchingAPI.LocationPoint], to writer: inout JSONWriter) -> Bool {
        writer.raw("[")
        for (index, point) in points.enumerated() {
            if index > 0 { writer.raw(",") }
            guard point.writeJSON(to: &writer) else { return false }
        }
        writer.raw("]")
        return true
    }
}

extension MatchingAPI.LocationBatch: ScannableJSON, WritableJSON {
    private static let entryKeys: [StaticString] = ["driverID", "points"]

    public init?(scanning scanner: inout JSONScanner) {
        var drivers: [Entry]? = nil
        guard scanner.object(["drivers"], { _, scanner in
            drivers = scanner.array { scanner -> Entry? in
                var driver: String? = nil
                var points: [MatchingAPI.LocationPoint]? = nil
                guard scanner.object(Self.entryKeys, { key, scanner in
                    if key == 0 {
                        driver = scanner.string()
                        return driver != nil
                    }
                    points = scanner.array { MatchingAPI.LocationPoint(scanning: &$0) }
                    return points != nil
                }) == 0b11, let driver, let points else { return nil }
                return Entry(driverID: driver, points: points)
            }
            return drivers != nil
        }) == 1, let drivers else { return nil }
        self.init(drivers: drivers)
    }

    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{\"drivers\":[")
        for (index, entry) in drivers.enumerated() {
            writer.raw(index > 0 ? ",{\"driverID\":" : "{\"driverID\":")
            writer.string(entry.driverID)
            writer.raw(",\"points\":")
            guard MatchingAPI.Locations.write(entry.points, to: &writer) else { return false }
            writer.raw("}")
        }
        writer.raw("]}")
        return true
    }
}

extension MatchingAPI.LocationBatchResult: ScannableJSON, WritableJSON {
    private static let outcomeKeys: [StaticString] = ["accepted", "status"]

    /// Read on its own while every entry was accepted or refused without a problem document; a batch
    /// with a problem in it is read the general way.
    public init?(scanning scanner: inout JSONScanner) {
        var results: [Outcome]? = nil
        guard scanner.object(["results"], { _, scanner in
            results = scanner.array { scanner -> Outcome? in
                var status = 0
                var accepted: Int? = nil
                guard let seen = scanner.object(Self.outcomeKeys, { key, scanner in
                    if key == 0 {
                        if scanner.takeNull() { return true }
                        accepted = scanner.integer()
                        return accepted != nil
                    }
                    guard let value = scanner.integer() else { return false }
                    status = value
                    return true
                }), seen & 0b10 != 0 else { return nil }
                return Outcome(status: status, accepted: accepted)
            }
            return results != nil
        }) == 1, let results else { return nil }
        self.init(results: results)
    }

    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{\"results\":[")
        for (index, outcome) in results.enumerated() {
            guard outcome.problem == nil else { return false }
            if index > 0 { writer.raw(",") }
            writer.raw("{")
            if let accepted = outcome.accepted {
                writer.raw("\"accepted\":")
                writer.integer(accepted)
                writer.raw(",")
            }
            writer.raw("\"status\":")
            writer.integer(outcome.status)
            writer.raw("}")
        }
        writer.raw("]}")
        return true
    }
}

extension MatchingAPI.LocationsAccepted: WritableJSON {
    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{\"accepted\":")
        writer.integer(accepted)
        writer.raw("}")
        return true
    }
}
