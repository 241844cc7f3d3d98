import Configuration
import Contracts
import EventBus
import Foundation
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// What the analytics service is made of, for the server and for `hailstorm-analytics rebuild`.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys); `analytics.cities`
/// (see `CityGrids`), `analytics.cell.edge.m` (the hexagons' edge, 460); the streams read,
/// `analytics.order.stream` (`order`), `analytics.payment.stream` (`payment`), `analytics.coupon.stream`
/// (`coupon.claims`), `analytics.ad.stream` (`ad`), `analytics.location.stream` (`driver.location`),
/// `analytics.quotes.stream` (`order.quotes`); `analytics.batch.size` (events per read, 1000);
/// `analytics.gather.ms` (250: after a read that was not full, the wait before the next, so that each
/// stream is stored a few transactions a second rather than one per trickle of events);
/// `analytics.path.delay.seconds` (how long after a trip's completion its path is analysed, 5),
/// `analytics.path.tolerance.m` (Douglas–Peucker's tolerance for the stored analysis, 25), and the
/// rules of `PathRules`.
struct AnalyticsKit {
    let store: AnalyticsStore
    let ingest: AnalyticsIngest
    let analyser: PathAnalyser
    let grids: CityGrids
    let analysis: PathAnalysis

    static func serviceKit(reader: ConfigReader) throws -> ServiceKit {
        try ServiceKit(name: "analytics", reader: reader, defaultPort: 9009)
    }

    init(kit: inout ServiceKit, reader: ConfigReader) async throws {
        let edge = Double(try reader.int(forKey: "analytics.cell.edge.m", default: 460, in: 20...20_000))
        grids = try CityGrids(
            specification: reader.text(forKey: "analytics.cities", default: CityGrids.defaultSpecification), edgeMeters: edge)
        // 32 MiB of pages per connection (a writer and up to four readers): the recent rollups and fixes stay
        // in memory instead of being read back from the kernel in every transaction.
        let database = try await kit.openDatabase(migrations: AnalyticsStore.migrations, cacheKiB: 32_768)
        store = AnalyticsStore(db: database, grids: grids)
        var streams = AnalyticsIngest.Streams()
        streams.order = reader.string(forKey: "analytics.order.stream", default: streams.order)
        streams.payment = reader.string(forKey: "analytics.payment.stream", default: streams.payment)
        streams.coupon = reader.string(forKey: "analytics.coupon.stream", default: streams.coupon)
        streams.ad = reader.string(forKey: "analytics.ad.stream", default: streams.ad)
        streams.location = reader.string(forKey: "analytics.location.stream", default: streams.location)
        streams.quotes = reader.string(forKey: "analytics.quotes.stream", default: streams.quotes)
        ingest = AnalyticsIngest(store: store, streams: streams, gate: IngestGate())

        func number(_ key: String, _ fallback: Double, _ range: ClosedRange<Double>) throws -> Double {
            try reader.double(forKey: key, default: fallback, in: range)
        }
        var rules = PathRules()
        rules.detourRatio = try number("analytics.detour.ratio", rules.detourRatio, 1...100)
        rules.corridorKm = try number("analytics.corridor.km", rules.corridorKm, 0.01...1000)
        rules.stayRadiusKm = try number("analytics.stay.radius.m", rules.stayRadiusKm * 1000, 1...10_000) / 1000
        rules.staySeconds = try number("analytics.stay.seconds", rules.staySeconds, 1...86_400)
        rules.longStopSeconds = try number("analytics.long.stop.seconds", rules.longStopSeconds, 1...86_400)
        rules.dropoffKm = try number("analytics.dropoff.km", rules.dropoffKm, 0.01...1000)
        rules.earlyShare = try number("analytics.early.share", rules.earlyShare, 0...1)
        analysis = PathAnalysis(rules: rules)
        analyser = PathAnalyser(
            store: store, analysis: analysis, delay: try number("analytics.path.delay.seconds", 5, 0...86_400),
            toleranceMeters: try number("analytics.path.tolerance.m", 25, 0.1...10_000))
    }
}

/// Builds the analytics service from configuration (keys: `AnalyticsKit`).
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try AnalyticsKit.serviceKit(reader: reader)
    let tokens = try await kit.accessTokens()
    let parts = try await AnalyticsKit(kit: &kit, reader: reader)
    if try await parts.store.isRebuilding() {
        kit.logger.notice("a rebuild was interrupted; running it again before reading the streams")
        _ = try await parts.ingest.rebuild(redis: kit.redis, analyser: parts.analyser, logger: kit.logger)
    }
    let batch = try reader.int(forKey: "analytics.batch.size", default: 1000, in: 1...10_000)
    let gather = try reader.int(forKey: "analytics.gather.ms", default: 250, in: 0...10_000)
    for consumer in parts.ingest.consumers(
        redis: kit.redis, instance: kit.configuration.instanceID, batchSize: batch, gather: .milliseconds(gather), logger: kit.logger)
    {
        kit.addService(consumer)
    }
    let analyser = parts.analyser
    kit.addService(PeriodicWork("trip-paths", every: .seconds(1), logger: kit.logger) {
        try await analyser.analyseDue()
    })
    kit.pruneProcessedEvents(in: parts.store.db)
    // `analytics.fixes.retention.hours` (48): drivers' fixes are kept this long (a trip's path can be
    // drawn and analysed again while they are); `analytics.seen.retention.days` (31, at least as long as
    // the fixes): who was active where, which the active riders and drivers of a range are counted from.
    // Rollups, orders and trips' analyses are kept.
    let fixesHours = try reader.int(forKey: "analytics.fixes.retention.hours", default: 48, in: 1...87_600)
    let seenDays = try reader.int(forKey: "analytics.seen.retention.days", default: 31, in: 1...3650)
    guard Double(seenDays * 24) >= Double(fixesHours) else {
        throw ConfigurationError("analytics.seen.retention.days must cover analytics.fixes.retention.hours")
    }
    let store = parts.store
    kit.addService(PeriodicWork("analytics-prune", every: .seconds(600), logger: kit.logger) {
        let now = Date().timeIntervalSince1970
        _ = try await store.prune(fixesBefore: now - Double(fixesHours) * 3600, seenBefore: now - Double(seenDays) * 86_400)
    })

    let router = kit.makeRouter()
    let api = try kit.authenticated(router, tokens: tokens)
    AnalyticsController(parts: parts, redis: kit.redis, logger: kit.logger).register(on: api)
    return kit.makeApplication(router: router)
}
