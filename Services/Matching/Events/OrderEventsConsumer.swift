import Contracts
import EventBus
import Logging
import Metrics
import RedisKit
import HailKit
import SQLiteKit

/// What matching learns from the order stream: new orders to dispatch (kept in its SQLite file before the
/// event is acknowledged), drivers taken by an assignment or a grab (their other offers withdrawn, and an
/// order left with no offered driver dispatched again), and drivers freed when a trip ends.
///
/// Safe out of order: an order that left dispatch is remembered (`left_dispatch`), so an `order.created`
/// delivered after its assignment does not dispatch it again and an `order.assigned` delivered after the
/// trip ended does not make its driver busy; a driver is freed only by the end of the order they are on.
enum OrderEventsConsumer {
    static let group = "matching"

    /// `city`: with matching split by city, this instance's (`CityRange`); every instance reads the whole
    /// stream in a group of its own (`matching-s1`), dispatches only the orders picked up in its city and
    /// follows the trips of the drivers it has.
    static func consumer(
        store: DispatchStore, fleet: DriverFleet, dispatch: DispatchService, redis: RedisClient, instance: String,
        city: CityRange = .everywhere, configuration: EventConsumerConfiguration, logger: Logger
    ) -> EventConsumer {
        EventConsumer.batching(
            stream: OrderEvents.Created.stream, group: city.shard.group(group), consumer: instance, redis: redis,
            configuration: configuration, logger: logger
        ) { envelopes in
            try await handle(envelopes, store: store, fleet: fleet, dispatch: dispatch, city: city)
        }
    }

    /// A read of the stream, in order: every change to matching's SQLite file in one transaction, then
    /// the drivers' trips in one Redis pipeline, then the window's claims released. Redelivered in part or
    /// whole (a crash between the steps, a failed batch handled again one by one), it changes nothing
    /// twice: new orders are recorded once per event id, the rest are idempotent.
    static func handle(
        _ envelopes: [EventEnvelope], store: DispatchStore, fleet: DriverFleet, dispatch: DispatchService, city: CityRange = .everywhere
    ) async throws {
        enum Step: Sendable {
            case created(EventEnvelope, OrderEvents.Created)
            case moved(OrderEvents.Moved)
        }
        let steps: [Step] = try envelopes.map { envelope in
            envelope.type == OrderEvents.Created.type
                ? .created(envelope, try envelope.decode(OrderEvents.Created.self))
                : .moved(try envelope.decode(OrderEvents.Moved.self))
        }
        let (trips, released, reopened) = try await store.db.write { db -> ([DriverFleet.TripChange], [String], Int) in
            var trips: [DriverFleet.TripChange] = []
            var released: [String] = []
            var reopened = 0
            for step in steps {
                switch step {
                case .created(let envelope, let created):
                    // Another city's order: its own instance dispatches it.
                    guard city.owns(created.pickup) else { continue }
                    if try ProcessedEvents.record(envelope, consumer: group, in: db) {
                        try store.add(created, in: db)
                    }
                case .moved(let moved):
                    switch moved.to {
                    case .assigned:
                        try store.done(moved.orderID, in: db)
                        if let driver = moved.driverID, try !store.hasEnded(moved.orderID, in: db) {
                            trips.append(.took(driver: driver, order: moved.orderID))
                            reopened += try store.withdrawOffers(to: driver, in: db).reopened.count
                        }
                        released.append(moved.orderID)
                    case .completed, .cancelled:
                        try store.ended(moved.orderID, in: db)
                        if let driver = moved.driverID, moved.from.holdsDriver {
                            trips.append(.ended(driver: driver, order: moved.orderID))
                        }
                        released.append(moved.orderID)
                    case .expired:
                        try store.ended(moved.orderID, in: db)
                    case .created, .offered, .arriving, .inTrip, .paid:
                        break
                    }
                }
            }
            return (trips, released, reopened)
        }
        if reopened > 0 { Counter(label: "hailstorm_dispatch_offers_reopened_total").increment(by: reopened) }
        // Split by city: the trips of drivers this city has (another city's drivers' trips cost it nothing;
        // a driver on a trip who goes online here is refused by order, which knows the trip).
        try await fleet.apply(city.isSplit ? trips.filter { fleet.has($0.driver) } : trips)
        for order in released { dispatch.release(order: order) }
    }
}

/// The places an instance of matching dispatches: everywhere (one instance), or, with matching split by
/// city (`matching.cities`), those nearer its own city's centre than any other's.
struct CityRange: Sendable {
    /// The instance's shard: the position of its city in `cities`.
    let shard: Shard
    let cities: CityCircles?

    static let everywhere = CityRange(shard: Shard(index: 0, of: 1), cities: nil)

    /// Whether matching is split by city.
    var isSplit: Bool { cities != nil && shard.isSplit }

    /// The city's name, for messages.
    var name: String { cities.map { $0.all[shard.index].name } ?? "every city" }

    func owns(_ point: GeoPoint) -> Bool {
        guard let cities, shard.isSplit else { return true }
        return MatchingAPI.shard(of: point, in: cities) == shard.index
    }

    /// A 421 problem for a place another city's instance dispatches.
    func misdirected(_ point: GeoPoint) -> Problem {
        let owner = cities.map { MatchingAPI.shard(of: point, in: $0) } ?? 0
        let city = cities.map { $0.all[owner].name } ?? "?"
        return Problem.misdirected("\(city) is dispatched by shard \(owner); this instance dispatches \(name) (shard \(shard.index) of \(shard.count))")
    }
}
