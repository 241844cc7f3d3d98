import Foundation

/// A point on the map as apps send it (degrees, WGS 84).
///
/// Decoding refuses a point off the earth (a latitude outside -90…90, a longitude outside -180…180), so
/// no request, event or stored row carries one into arithmetic; the refusal names the field.
public struct GeoPoint: Codable, Sendable, Hashable {
    public var lat: Double
    public var lon: Double

    public init(lat: Double, lon: Double) {
        self.lat = lat
        self.lon = lon
    }

    private enum CodingKeys: String, CodingKey { case lat, lon }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let lat = try container.decode(Double.self, forKey: .lat)
        guard Bounds.latitude.contains(lat) else {
            throw DecodingError.dataCorruptedError(forKey: .lat, in: container, debugDescription: "a latitude is from -90 to 90 degrees")
        }
        let lon = try container.decode(Double.self, forKey: .lon)
        guard Bounds.longitude.contains(lon) else {
            throw DecodingError.dataCorruptedError(forKey: .lon, in: container, debugDescription: "a longitude is from -180 to 180 degrees")
        }
        self.init(lat: lat, lon: lon)
    }

    public var isValid: Bool {
        lat.isFinite && lon.isFinite && Bounds.latitude.contains(lat) && Bounds.longitude.contains(lon)
    }

    /// Great-circle distance in km (haversine, mean earth radius).
    public func distanceKm(to other: GeoPoint) -> Double {
        let radians = Double.pi / 180
        let dLat = (other.lat - lat) * radians
        let dLon = (other.lon - lon) * radians
        let a = sin(dLat / 2) * sin(dLat / 2)
            + cos(lat * radians) * cos(other.lat * radians) * sin(dLon / 2) * sin(dLon / 2)
        return 2 * 6371.0088 * asin(min(1, a.squareRoot()))
    }
}

/// Where an order is in its life. The only moves are those in `allowedNext`; the order service refuses
/// every other with a 409 naming the current state.
public enum OrderState: String, Codable, Sendable, CaseIterable {
    case created
    case offered
    case assigned
    case arriving
    case inTrip = "in_trip"
    case completed
    case paid
    case cancelled
    case expired

    /// `created → offered → assigned → arriving → in_trip → completed → paid`, plus `cancelled` from
    /// `created|offered|assigned|arriving` and `expired` from `created|offered`.
    public var allowedNext: Set<OrderState> {
        switch self {
        case .created: [.offered, .cancelled, .expired]
        case .offered: [.assigned, .cancelled, .expired]
        case .assigned: [.arriving, .cancelled]
        case .arriving: [.inTrip, .cancelled]
        case .inTrip: [.completed]
        case .completed: [.paid]
        case .paid, .cancelled, .expired: []
        }
    }

    public func canMove(to next: OrderState) -> Bool { allowedNext.contains(next) }

    /// No move leads out of it.
    public var isFinal: Bool { allowedNext.isEmpty }

    /// The driver is on this order: assigned, on the way, or driving.
    public var holdsDriver: Bool { [.assigned, .arriving, .inTrip].contains(self) }

    /// The event type that announces reaching this state (`order.assigned`).
    public var eventType: String { "order.\(rawValue)" }
}

/// The order service: fares, orders and their trips. Money is in cents.
public enum OrderAPI {
    public static let service = "order"

    public struct QuoteRequest: Codable, Sendable, Hashable {
        public var pickup: GeoPoint
        public var dropoff: GeoPoint

        public init(pickup: GeoPoint, dropoff: GeoPoint) {
            self.pickup = pickup
            self.dropoff = dropoff
        }
    }

    /// What a ride would cost now: `(base + distance × per-km) × surge`, rounded to the cent.
    public struct Quote: Codable, Sendable, Hashable {
        public var distanceKm: Double
        public var baseFareCents: Int
        public var perKmCents: Int
        /// The surge factor of the pickup's cell (1 when there is none).
        public var surge: Double
        public var fareCents: Int
        public var currency: String

        public init(distanceKm: Double, baseFareCents: Int, perKmCents: Int, surge: Double, fareCents: Int, currency: String) {
            self.distanceKm = distanceKm
            self.baseFareCents = baseFareCents
            self.perKmCents = perKmCents
            self.surge = surge
            self.fareCents = fareCents
            self.currency = currency
        }
    }

    /// How an order finds its driver. Absent: the way the matching service is configured to dispatch.
    public enum Dispatch: String, Codable, Sendable, CaseIterable {
        /// Matching assigns it in its next window (min-cost assignment over the window's orders).
        case assign
        /// Matching offers it to the nearest drivers, who race to grab it.
        case offer
    }

    public struct NewOrder: Codable, Sendable, Hashable {
        public var pickup: GeoPoint
        public var dropoff: GeoPoint
        public var dispatch: Dispatch?

        public init(pickup: GeoPoint, dropoff: GeoPoint, dispatch: Dispatch? = nil) {
            self.pickup = pickup
            self.dropoff = dropoff
            self.dispatch = dispatch
        }

        public var route: QuoteRequest { QuoteRequest(pickup: pickup, dropoff: dropoff) }
    }

    /// One move of an order, as its history keeps it.
    public struct Transition: Codable, Sendable, Hashable {
        public var from: OrderState?
        public var to: OrderState
        public var at: Double
        /// Who made it: a user id, or the service (`matching`, `order-grab`, `order` for expiry).
        public var actor: String
        public var reason: String?

        public init(from: OrderState?, to: OrderState, at: Double, actor: String, reason: String? = nil) {
            self.from = from
            self.to = to
            self.at = at
            self.actor = actor
            self.reason = reason
        }
    }

    public struct Order: Codable, Sendable, Hashable {
        public var id: String
        public var riderID: String
        public var driverID: String?
        public var state: OrderState
        public var pickup: GeoPoint
        public var dropoff: GeoPoint
        public var distanceKm: Double
        public var fareCents: Int
        public var surge: Double
        public var currency: String
        public var createdAt: Double
        public var updatedAt: Double
        /// Every move, oldest first (on a single order; empty in lists).
        public var history: [Transition]
        /// How the rider asked for it to be dispatched (absent: matching's configured way).
        public var dispatch: Dispatch?

        public init(
            id: String, riderID: String, driverID: String?, state: OrderState, pickup: GeoPoint, dropoff: GeoPoint,
            distanceKm: Double, fareCents: Int, surge: Double, currency: String, createdAt: Double, updatedAt: Double,
            history: [Transition], dispatch: Dispatch? = nil
        ) {
            self.dispatch = dispatch
            self.id = id
            self.riderID = riderID
            self.driverID = driverID
            self.state = state
            self.pickup = pickup
            self.dropoff = dropoff
            self.distanceKm = distanceKm
            self.fareCents = fareCents
            self.surge = surge
            self.currency = currency
            self.createdAt = createdAt
            self.updatedAt = updatedAt
            self.history = history
        }
    }

    /// A page of orders, newest first; pass `nextCursor` back as `cursor` for the next page.
    public struct OrderPage: Codable, Sendable {
        /// Orders in a page when the caller names no `limit`.
        public static let defaultLimit = 20

        public var orders: [Order]
        public var nextCursor: String?

        public init(orders: [Order], nextCursor: String?) {
            self.orders = orders
            self.nextCursor = nextCursor
        }

        /// The cursor of the page after `order`, in a listing newest first (creation time, then id, both
        /// descending): `<creation time's bits>_<id>`.
        public static func cursor(after order: Order) -> String { "\(order.createdAt.bitPattern)_\(order.id)" }

        /// One page from the pages every shard of a split order service gave for the same cursor and
        /// `limit`: the newest `limit` orders of them all, and a cursor after the last one when any shard
        /// has orders beyond what is shown.
        public static func merged(_ pages: [OrderPage], limit: Int) -> OrderPage {
            let all = pages.flatMap(\.orders).sorted { a, b in
                // SQLite's order for the ids' text (bytes); ids are ASCII, where Swift's agrees.
                a.createdAt != b.createdAt ? a.createdAt > b.createdAt : a.id > b.id
            }
            let shown = Array(all.prefix(max(0, limit)))
            let more = all.count > shown.count || pages.contains { $0.nextCursor != nil }
            return OrderPage(orders: shown, nextCursor: more ? shown.last.map(cursor(after:)) : nil)
        }
    }

    public struct CancelRequest: Codable, Sendable, Hashable {
        public var reason: String

        public init(reason: String) {
            self.reason = reason
        }
    }

    /// Matching offers an order to drivers for grabbing (service role).
    public struct OfferRequest: Codable, Sendable, Hashable {
        public var driverIDs: [String]

        public init(driverIDs: [String]) {
            self.driverIDs = driverIDs
        }
    }

    /// A dispatch window's offers in one call (service role): each made as `offer` makes it, in its own
    /// savepoint of a shared transaction.
    public struct OfferBatch: Codable, Sendable, Hashable {
        public struct Item: Codable, Sendable, Hashable {
            public var orderID: String
            public var driverIDs: [String]

            public init(orderID: String, driverIDs: [String]) {
                self.orderID = orderID
                self.driverIDs = driverIDs
            }
        }

        public var offers: [Item]

        public init(offers: [Item]) {
            self.offers = offers
        }
    }

    /// What became of each offer of a batch, in the batch's order.
    public struct OfferResults: Codable, Sendable, Hashable {
        public struct Result: Codable, Sendable, Hashable {
            public var orderID: String
            /// True when the order is now offered to those drivers (made now, or already so).
            public var offered: Bool
            /// For a refusal: the status and problem type `offer` would have answered (`409`
            /// `illegal-transition` for an order no longer waiting, `404`…), and its detail.
            public var status: Int?
            public var problem: String?
            public var detail: String?

            public init(orderID: String, offered: Bool, status: Int? = nil, problem: String? = nil, detail: String? = nil) {
                self.orderID = orderID
                self.offered = offered
                self.status = status
                self.problem = problem
                self.detail = detail
            }
        }

        public var results: [Result]

        public init(results: [Result]) {
            self.results = results
        }
    }

    /// An order given to a driver (service role): by matching's assignment, or by a won grab.
    public struct AssignRequest: Codable, Sendable, Hashable {
        public var driverID: String
        /// `dispatch` or `grab`.
        public var via: String
        public var pickupKm: Double?

        public init(driverID: String, via: String, pickupKm: Double? = nil) {
            self.driverID = driverID
            self.via = via
            self.pickupKm = pickupKm
        }
    }

    /// A dispatch window's assignments in one call (service role): each made as `assign` makes it, in its
    /// own savepoint of a shared transaction, so one refused (the order left dispatch, the driver took
    /// another trip) neither undoes nor holds up the others.
    public struct AssignmentBatch: Codable, Sendable, Hashable {
        public struct Item: Codable, Sendable, Hashable {
            public var orderID: String
            public var driverID: String
            /// `dispatch` or `grab`.
            public var via: String
            public var pickupKm: Double?

            public init(orderID: String, driverID: String, via: String, pickupKm: Double? = nil) {
                self.orderID = orderID
                self.driverID = driverID
                self.via = via
                self.pickupKm = pickupKm
            }
        }

        public var assignments: [Item]

        public init(assignments: [Item]) {
            self.assignments = assignments
        }
    }

    /// What became of each assignment of a batch, in the batch's order.
    public struct AssignmentResults: Codable, Sendable, Hashable {
        public struct Result: Codable, Sendable, Hashable {
            public var orderID: String
            /// True when the order is now assigned to the driver (made now, or already so).
            public var assigned: Bool
            /// For a refusal: the status and problem type `assign` would have answered
            /// (`409` `driver-busy`, `409` `illegal-transition`, `404`…), and its detail.
            public var status: Int?
            public var problem: String?
            public var detail: String?

            public init(orderID: String, assigned: Bool, status: Int? = nil, problem: String? = nil, detail: String? = nil) {
                self.orderID = orderID
                self.assigned = assigned
                self.status = status
                self.problem = problem
                self.detail = detail
            }
        }

        public var results: [Result]

        public init(results: [Result]) {
            self.results = results
        }
    }

    /// The surge factor of the cell holding `at` (admin). Takes effect on the next quote, on every instance.
    public struct SurgeSetting: Codable, Sendable, Hashable {
        public var at: GeoPoint
        public var factor: Double
        /// The cell it applies to, as the order service names it (in answers).
        public var cell: String?
        /// The cell's factor before this setting (in answers).
        public var previous: Double?

        public init(at: GeoPoint, factor: Double, cell: String? = nil, previous: Double? = nil) {
            self.at = at
            self.factor = factor
            self.cell = cell
            self.previous = previous
        }
    }

    /// One cell with a surge factor of its own: a box of `OrderAPI.SurgeMap.cellDegrees` on each side.
    public struct SurgeCell: Codable, Sendable, Hashable {
        public var cell: String
        public var factor: Double
        public var south: Double
        public var west: Double
        public var north: Double
        public var east: Double

        public init(cell: String, factor: Double, south: Double, west: Double, north: Double, east: Double) {
            self.cell = cell
            self.factor = factor
            self.south = south
            self.west = west
            self.north = north
            self.east = east
        }
    }

    /// Every cell whose surge factor differs from the default.
    public struct SurgeMap: Codable, Sendable {
        public var cellDegrees: Double
        public var defaultFactor: Double
        public var cells: [SurgeCell]

        public init(cellDegrees: Double, defaultFactor: Double, cells: [SurgeCell]) {
            self.cellDegrees = cellDegrees
            self.defaultFactor = defaultFactor
            self.cells = cells
        }
    }

    public static let quote = Endpoint<QuoteRequest, Quote>(service: service, .post, "/v1/quotes", isIdempotent: true)
    /// Send an Idempotency-Key: a repeat answers the first order instead of creating another.
    public static let create = Endpoint<NewOrder, Order>(service: service, .post, "/v1/orders", successStatus: .created)
    public static let order = Endpoint<NoContent, Order>(service: service, .get, "/v1/orders/{id}")
    /// The caller's orders (a rider's rides or a driver's trips); query `cursor`, `limit` (1–100, 20).
    public static let list = Endpoint<NoContent, OrderPage>(service: service, .get, "/v1/orders")
    public static let cancel = Endpoint<CancelRequest, Order>(service: service, .post, "/v1/orders/{id}/cancel")
    public static let arrive = Endpoint<NoContent, Order>(service: service, .post, "/v1/orders/{id}/arrive")
    public static let start = Endpoint<NoContent, Order>(service: service, .post, "/v1/orders/{id}/start")
    public static let complete = Endpoint<NoContent, Order>(service: service, .post, "/v1/orders/{id}/complete")
    /// Repeating the same offer or assignment answers the order as it is, so these are safe to retry.
    public static let offer = Endpoint<OfferRequest, Order>(service: service, .post, "/v1/orders/{id}/offer", isIdempotent: true)
    public static let assign = Endpoint<AssignRequest, Order>(service: service, .post, "/v1/orders/{id}/assign", isIdempotent: true)
    /// Up to 500 offers in one call; a repeat answers each as it stands, so it is safe to retry.
    public static let offerBatch = Endpoint<OfferBatch, OfferResults>(service: service, .post, "/v1/offers", isIdempotent: true)
    /// Up to 500 assignments in one call; a repeat answers each as it stands, so it is safe to retry.
    public static let assignBatch = Endpoint<AssignmentBatch, AssignmentResults>(
        service: service, .post, "/v1/assignments", isIdempotent: true)
    public static let setSurge = Endpoint<SurgeSetting, SurgeSetting>(service: service, .put, "/v1/surge")
    /// The cells with a surge factor of their own (admin, service).
    public static let surgeMap = Endpoint<NoContent, SurgeMap>(service: service, .get, "/v1/surge")
}

public enum OrderEvents {
    /// A rider's order was accepted; matching dispatches it.
    public struct Created: DomainEvent, Hashable {
        public static let stream = "order"
        public static let type = "order.created"
        public var orderID: String
        public var riderID: String
        public var pickup: GeoPoint
        public var dropoff: GeoPoint
        public var fareCents: Int
        public var createdAt: Double
        public var dispatch: OrderAPI.Dispatch?
        /// The surge factor the fare was quoted with (absent in events from before it was carried).
        public var surge: Double?

        public init(
            orderID: String, riderID: String, pickup: GeoPoint, dropoff: GeoPoint, fareCents: Int, createdAt: Double,
            dispatch: OrderAPI.Dispatch? = nil, surge: Double? = nil
        ) {
            self.dispatch = dispatch
            self.surge = surge
            self.orderID = orderID
            self.riderID = riderID
            self.pickup = pickup
            self.dropoff = dropoff
            self.fareCents = fareCents
            self.createdAt = createdAt
        }
    }

    /// An order moved. Published with the type of the state it reached (`order.offered`,
    /// `order.assigned`, `order.arriving`, `order.in_trip`, `order.completed`, `order.cancelled`,
    /// `order.expired`), from the same transaction as the move.
    public struct Moved: DomainEvent, Hashable {
        public static let stream = "order"
        public static let type = "order.moved"
        public var orderID: String
        public var riderID: String
        public var driverID: String?
        /// For `order.offered`: the drivers it was offered to.
        public var offeredTo: [String]?
        public var from: OrderState
        public var to: OrderState
        public var at: Double
        public var reason: String?
        public var fareCents: Int
        /// Who made the move: a rider's or driver's account, an admin's, or a service's name.
        public var actor: String?

        public init(
            orderID: String, riderID: String, driverID: String?, offeredTo: [String]? = nil, from: OrderState,
            to: OrderState, at: Double, reason: String? = nil, fareCents: Int, actor: String? = nil
        ) {
            self.actor = actor
            self.orderID = orderID
            self.riderID = riderID
            self.driverID = driverID
            self.offeredTo = offeredTo
            self.from = from
            self.to = to
            self.at = at
            self.reason = reason
            self.fareCents = fareCents
        }
    }
}

// MARK: A trip's moves and its order, read and written on their own (`ScannableJSON`, `WritableJSON`):
// every move is an event several services read and an answer to the driver who made it.

extension OrderEvents.Moved: ScannableJSON, WritableJSON {
    private static let keys: [StaticString] = ["actor", "at", "driverID", "fareCents", "from", "offeredTo", "orderID", "reason", "riderID", "to"]

    public init?(scanning scanner: inout JSONScanner) {
        var actor: String? = nil, driverID: String? = nil, reason: String? = nil, offeredTo: [String]? = nil
        var orderID = "", riderID = "", at = 0.0, fareCents = 0
        var from = OrderState.created, to = OrderState.created
        let seen = scanner.object(Self.keys) { key, scanner in
            switch key {
            case 0, 2, 7:
                guard let value = scanner.optionalString() else { return false }
                if key == 0 { actor = value } else if key == 2 { driverID = value } else { reason = value }
                return true
            case 1:
                guard let value = scanner.number() else { return false }
                at = value
            case 3:
                guard let value = scanner.integer() else { return false }
                fareCents = value
            case 4, 9:
                guard let value = scanner.value(OrderState.self) else { return false }
                if key == 4 { from = value } else { to = value }
            case 5:
                if scanner.takeNull() { return true }
                offeredTo = scanner.array { $0.string() }
                return offeredTo != nil
            default:
                guard let value = scanner.string() else { return false }
                if key == 6 { orderID = value } else { riderID = value }
            }
            return true
        }
        // Required: at, fareCents, from, orderID, riderID, to.
        let required: UInt64 = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 8) | (1 << 9)
        guard let seen, seen & required == required else { return nil }
        self.init(
            orderID: orderID, riderID: riderID, driverID: driverID, offeredTo: offeredTo, from: from, to: to, at: at,
            reason: reason, fareCents: fareCents, actor: actor)
    }

    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{")
        var first = true
        if let actor {
            writer.key("actor", first: true)
            writer.string(actor)
            first = false
        }
        writer.key("at", first: first)
        guard writer.number(at) else { return false }
        if let driverID {
            writer.key("driverID")
            writer.string(driverID)
        }
        writer.key("fareCents")
        writer.integer(fareCents)
        writer.key("from")
        writer.string(from.rawValue)
        if let offeredTo {
            writer.key("offeredTo")
            writer.strings(offeredTo)
        }
        writer.key("orderID")
        writer.string(orderID)
        if let reason {
            writer.key("reason")
            writer.string(reason)
        }
        writer.key("riderID")
        writer.string(riderID)
        writer.key("to")
        writer.string(to.rawValue)
        writer.raw("}")
        return true
    }
}

extension GeoPoint: WritableJSON {
    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{\"lat\":")
        guard writer.number(lat) else { return false }
        writer.raw(",\"lon\":")
        guard writer.number(lon) else { return false }
        writer.raw("}")
        return true
    }
}

extension OrderAPI.Transition: WritableJSON {
    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{")
        writer.key("actor", first: true)
        writer.string(actor)
        writer.key("at")
        guard writer.number(at) else { return false }
        if let from {
            writer.key("from")
            writer.string(from.rawValue)
        }
        if let reason {
            writer.key("reason")
            writer.string(reason)
        }
        writer.key("to")
        writer.string(to.rawValue)
        writer.raw("}")
        return true
    }
}

extension OrderAPI.Order: WritableJSON {
    public func writeJSON(to writer: inout JSONWriter) -> Bool {
        writer.raw("{")
        writer.key("createdAt", first: true)
        guard writer.number(createdAt) else { return false }
        writer.key("currency")
        writer.string(currency)
        if let dispatch {
            writer.key("dispatch")
            writer.string(dispatch.rawValue)
        }
        writer.key("distanceKm")
        guard writer.number(distanceKm) else { return false }
        if let driverID {
            writer.key("driverID")
            writer.string(driverID)
        }
        writer.key("dropoff")
        guard dropoff.writeJSON(to: &writer) else { return false }
        writer.key("fareCents")
        writer.integer(fareCents)
        writer.key("history")
        writer.raw("[")
        for (index, transition) in history.enumerated() {
            if index > 0 { writer.raw(",") }
            guard transition.writeJSON(to: &writer) else { return false }
        }
        writer.raw("]")
        writer.key("id")
        writer.string(id)
        writer.key("pickup")
        guard pickup.writeJSON(to: &writer) else { return false }
        writer.key("riderID")
        writer.string(riderID)
        writer.key("state")
        writer.string(state.rawValue)
        writer.key("surge")
        guard writer.number(surge) else { return false }
        writer.key("updatedAt")
        guard writer.number(updatedAt) else { return false }
        writer.raw("}")
        return true
    }
}
