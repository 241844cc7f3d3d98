import Configuration
import Contracts
import EventBus
import Foundation
import HailKit
import Hummingbird
import Logging
import MatchingEngine
import SQLiteKit

/// Builds the matching service from configuration.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys), `auth.denylist.check` (true);
/// `matching.dispatch.mode` (`assign` — batched optimal assignment — or `offer` — offered to the nearest
/// drivers for grabbing), `matching.engine.mode` (`exact` or `fast`, for assign), `matching.window.ms`
/// (250: a window's batch of assignments and offers is what the drivers then act on at once; shorter windows
/// spread that over the second), `matching.max.pickup.km` (5), `matching.offer.drivers` (5), `matching.offer.seconds` (30),
/// `matching.window.max.orders` (5000); the city `matching.city.lat` / `matching.city.lon` (the centre the
/// plane is projected around; 52.52, 13.405), `matching.city.radius.km` (40) and `matching.cell.km` (0.4);
/// or, split by city (`shards` naming N for matching), `matching.cities` (`CityCircles`: N cities, the k-th
/// dispatched by shard k around its centre and within its radius; each instance takes the orders picked up
/// nearer its centre than any other, and its drivers' fixes there; its Redis keys under `matching-s<k>`);
/// `matching.redis.prefix` (`matching`: the GEO set and the online/busy sets); `matching.events.reclaim.seconds` (30);
/// `matching.driver.stale.seconds` (120: an available driver without a fix for this long goes offline);
/// `matching.fix.copy.ms` (100: how often the fixes received are copied to Redis, for a restart's rebuild);
/// `matching.location.publish.ms` (250: how often accepted fixes go to the `driver.location` stream; 0 turns
/// the stream off) and `matching.location.stream.max` (200,000 entries of up to 1,000 fixes each).
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "matching", reader: reader, defaultPort: 9003)
    let tokens = try await kit.accessTokens()

    let styleName = reader.string(forKey: "matching.dispatch.mode", default: "assign")
    guard let style = DispatchStyle(rawValue: styleName) else {
        throw ConfigurationError("matching.dispatch.mode must be assign or offer, not \(styleName)")
    }
    let engineName = reader.string(forKey: "matching.engine.mode", default: "exact")
    guard let engineMode = DispatchMode(rawValue: engineName), engineMode == .exact || engineMode == .fast else {
        throw ConfigurationError("matching.engine.mode must be exact or fast, not \(engineName)")
    }
    // Split by city: `matching.cities` names one city per shard, the k-th the city of shard k.
    let shard = kit.configuration.ownShard
    let cityText = reader.text(forKey: "matching.cities", default: "")
    var cities: CityCircles? = nil
    if !cityText.isEmpty {
        do {
            cities = try CityCircles(specification: cityText)
        } catch {
            throw ConfigurationError("matching.cities: \(error.description)")
        }
    }
    if shard.isSplit {
        guard let cities, cities.all.count == shard.count else {
            throw ConfigurationError(
                "matching is split into \(shard.count) shards (shards): matching.cities must name \(shard.count) cities, one per instance, not \(cities?.all.count ?? 0)")
        }
    }
    let ownCity = cities.map { $0.all[shard.isSplit ? shard.index : 0] }
    let city = CityRange(shard: shard, cities: cities)
    let centre =
        if let ownCity {
            GeoCoordinate(latitude: ownCity.centre.lat, longitude: ownCity.centre.lon)
        } else {
            GeoCoordinate(
                latitude: try reader.double(forKey: "matching.city.lat", default: 52.52, in: -90...90),
                longitude: try reader.double(forKey: "matching.city.lon", default: 13.405, in: -180...180))
        }
    guard centre.isValid else { throw ConfigurationError("matching.city.lat/lon is not a place on earth") }
    let radius = try ownCity.map { $0.radiusMeters / 1000 } ?? reader.double(forKey: "matching.city.radius.km", default: 40, in: 0...20_000)
    let cell = try reader.double(forKey: "matching.cell.km", default: 0.4, in: 0...1000)
    let maxPickupKm = try reader.double(forKey: "matching.max.pickup.km", default: 5, in: 0...1000)
    guard radius > 0, cell > 0, maxPickupKm > 0 else {
        throw ConfigurationError("matching.city.radius.km, matching.cell.km and matching.max.pickup.km must be positive")
    }
    let geometry = GridGeometry(
        minimum: PlanePoint(x: -radius, y: -radius), maximum: PlanePoint(x: radius, y: radius), cellSize: cell)
    let database = try await kit.openDatabase(migrations: DispatchStore.migrations)
    let store = DispatchStore(db: database)
    let fleet = DriverFleet(
        live: LiveDriverIndex(DriverIndex(geometry: geometry)), projection: LocalProjection(origin: centre),
        redis: kit.redis, prefix: shard.named(reader.string(forKey: "matching.redis.prefix", default: "matching")),
        staleAfter: .seconds(max(1, try reader.int(forKey: "matching.driver.stale.seconds", default: 120, in: 1...86_400))))
    let restored = try await fleet.restore()
    kit.logger.info("driver index rebuilt from Redis", metadata: ["drivers": "\(restored)"])

    let counters = DispatchCounters()
    let dispatch = DispatchService(
        settings: DispatchSettings(
            style: style, window: .milliseconds(max(50, try reader.int(forKey: "matching.window.ms", default: 250, in: 50...60_000))),
            engine: DispatchConfiguration(mode: engineMode, maxPickupKm: maxPickupKm),
            offerDrivers: max(1, try reader.int(forKey: "matching.offer.drivers", default: 5, in: 1...100)),
            offerSeconds: Double(max(1, try reader.int(forKey: "matching.offer.seconds", default: 30, in: 1...3600))),
            maxOrdersPerWindow: max(1, try reader.int(forKey: "matching.window.max.orders", default: 5000, in: 1...100_000))),
        store: store, fleet: fleet, clients: kit.clients,
        credentials: try ServiceCredentials(tokens: tokens), claims: DispatchClaims(), counters: counters,
        logger: kit.logger)
    let reclaim = max(1, try reader.int(forKey: "matching.events.reclaim.seconds", default: 30, in: 1...86_400))

    kit.addService(OrderEventsConsumer.consumer(
        store: store, fleet: fleet, dispatch: dispatch, redis: kit.redis, instance: kit.configuration.instanceID, city: city,
        configuration: EventConsumerConfiguration(reclaimAfter: .seconds(reclaim), reclaimInterval: .seconds(max(1, reclaim / 2))),
        logger: kit.logger))
    kit.addService(dispatch)
    let copyEvery = try reader.int(forKey: "matching.fix.copy.ms", default: 100, in: 10...10_000)
    kit.addService(PeriodicWork("fix-copy", every: .milliseconds(copyEvery), maxBackoff: .seconds(2), finalRun: true, logger: kit.logger) {
        try await fleet.copyFixes()
        return .done
    })
    kit.pruneProcessedEvents(in: database)
    // `matching.left.retention.seconds`: how long an order that left dispatch is remembered, to recognise
    // its events delivered late; far beyond a stream's redelivery (default a day).
    let retention = Double(try reader.int(forKey: "matching.left.retention.seconds", default: 86_400, in: 60...31_536_000))
    kit.addService(PeriodicWork("left-dispatch-prune", every: .seconds(600), logger: kit.logger) {
        try await store.pruneLeft(olderThan: retention)
    })

    let publishEvery = try reader.int(forKey: "matching.location.publish.ms", default: 250, in: 0...60_000)
    var fixStream: FixStream?
    if publishEvery > 0 {
        let stream = FixStream.fixes(
            redis: kit.redis, source: kit.name,
            maxLength: try reader.int(forKey: "matching.location.stream.max", default: 200_000, in: 100...100_000_000))
        kit.addService(stream.periodic(every: .milliseconds(publishEvery), logger: kit.logger))
        fixStream = stream
    }

    let router = kit.makeRouter()
    let api = try kit.authenticated(router, tokens: tokens)
    DriverController(
        fleet: fleet, store: store, counters: counters, style: style, fixStream: fixStream, dispatch: dispatch, city: city
    ).register(on: api)
    return kit.makeApplication(router: router)
}
