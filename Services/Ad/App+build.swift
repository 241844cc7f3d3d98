import Configuration
import Contracts
import Crypto
import EventBus
import Foundation
import HailKit
import Hummingbird
import Logging
import RedisKit
import SQLiteKit

/// Builds the ad service from configuration.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys), `ad.cities` (see
/// `Cities`), `ad.token.key` (secret: the key impression and click tokens are signed with, 32 bytes or
/// more; without it a random key is made at start, and tokens handed out before a restart are then
/// refused — production refuses to start without one), `ad.token.seconds` (600), `ad.redis.prefix` (`ad`),
/// `ad.redis.shards` (the campaigns' books split by campaign over this many hash tags, each with its own
/// stream: 1 on one Redis, where the keys stay plain, 3 on a Redis Cluster; 1 to 64),
/// `ad.events.stream` (`ad`), `ad.coupon.stream` and `ad.order.stream` (the streams of coupon claims and of orders it
/// follows, `coupon.claims` and `order`),
/// `ad.segment.new.trips` (3), `ad.segment.frequent.trips` (10), `ad.exploration.percent` (10),
/// `ad.pacing.interval.seconds` (60), `ad.pacing.horizon.seconds` (900), `ad.refresh.ms` (how often the
/// books are read from Redis, 1000) and `ad.counts.flush.ms` (how often serving figures are stored, 2000).
///
/// With `shards` naming more than one for ad, this instance owns shard `shard`: the cities
/// `AdAPI.shard(ofCity:count:)` gives it, with their campaigns (ids `s<k>-…`), serving figures and
/// pacing; it counts its own campaigns' impressions and clicks onto streams of its own, republished
/// onto `ad.events.stream`, and follows the order and coupon streams in a consumer group of its own.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "ad", reader: reader, defaultPort: 9008)
    let tokens = try await kit.accessTokens()
    let database = try await kit.openDatabase(migrations: AdStore.migrations)
    let store = AdStore(db: database)
    let cities = try Cities(specification: reader.text(forKey: "ad.cities", default: Cities.defaultSpecification))
    let stream = try reader.keyName(forKey: "ad.events.stream", default: AdEvents.Counted.stream)

    let key: [UInt8]
    if let configured = reader.string(forKey: "ad.token.key"), !configured.isEmpty {
        guard configured.utf8.count >= 32 else { throw ConfigurationError("ad.token.key must be 32 bytes or more") }
        key = Array(configured.utf8)
    } else {
        guard kit.configuration.mode != .production else {
            throw ConfigurationError("ad.token.key is required in production: ads' tokens would not survive a restart")
        }
        kit.logger.notice("ad.token.key not set: a random key signs ad tokens, which a restart makes invalid")
        key = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }

    var settings = AdCatalog.Settings()
    settings.tokenSeconds = Double(try reader.int(forKey: "ad.token.seconds", default: 600, in: 10...86_400))
    settings.newBelow = try reader.int(forKey: "ad.segment.new.trips", default: 3, in: 1...1_000_000)
    settings.frequentFrom = try reader.int(forKey: "ad.segment.frequent.trips", default: 10, in: 1...1_000_000)
    settings.exploration = Double(try reader.int(forKey: "ad.exploration.percent", default: 10, in: 0...100)) / 100
    settings.pacingInterval = Double(try reader.int(forKey: "ad.pacing.interval.seconds", default: 60, in: 1...3600))
    settings.pacingHorizon = Double(try reader.int(forKey: "ad.pacing.horizon.seconds", default: 900, in: 1...86_400))
    let refresh = try reader.int(forKey: "ad.refresh.ms", default: 1000, in: 50...60_000)
    let flush = try reader.int(forKey: "ad.counts.flush.ms", default: 2000, in: 50...60_000)

    let prefix = try reader.keyName(forKey: "ad.redis.prefix", default: "ad")
    let shards = try reader.int(forKey: "ad.redis.shards", default: kit.configuration.redis.cluster ? 3 : 1, in: 1...64)
    let shard = kit.configuration.ownShard
    var ledger = AdLedger(redis: kit.redis, prefix: prefix, source: kit.name, stream: stream)
    ledger.owner = shard
    if kit.configuration.redis.cluster || shards > 1 { ledger.tags = HashSlot.spreadTags(shards, named: prefix) }
    let counts = ServeCounts()
    let catalog = AdCatalog(
        store: store, ledger: ledger, cities: cities, tokens: AdTokens(key: key), counts: counts, settings: settings, logger: kit.logger)
    try await catalog.reload()

    kit.addService(PeriodicWork("ad-books", every: .milliseconds(refresh), logger: kit.logger) {
        try await catalog.refresh()
        return .done
    })
    kit.addService(PeriodicWork("ad-serve-counts", every: .milliseconds(flush), finalRun: true, logger: kit.logger) {
        let taken = counts.take()
        do {
            try await store.add(taken.counts, pacing: taken.pacing)
        } catch {
            counts.giveBack(taken)
            throw error
        }
        return .done
    })
    let wakeups = OutboxWakeups()
    for consumer in AdRecorder.consumers(
        store: store, ledger: ledger, instance: kit.configuration.instanceID, wakeups: wakeups,
        configuration: EventConsumerConfiguration(batchSize: 256), logger: kit.logger)
    {
        kit.addService(consumer)
    }
    if ledger.republishes { kit.relayOutbox(of: database, wakeups: wakeups) }
    kit.addService(AdFollower.orders(
        store: store, redis: kit.redis, stream: reader.string(forKey: "ad.order.stream", default: OrderEvents.Created.stream),
        instance: kit.configuration.instanceID, shard: shard, logger: kit.logger))
    kit.addService(AdFollower.couponClaims(
        store: store, redis: kit.redis, stream: reader.string(forKey: "ad.coupon.stream", default: CouponEvents.Claimed.stream),
        instance: kit.configuration.instanceID, shard: shard, logger: kit.logger))
    kit.trimStreams(ledger.republishes ? [stream] + ledger.countStreams : [stream])
    kit.pruneProcessedEvents(in: database)

    let router = kit.makeRouter()
    let api = try kit.authenticated(router, tokens: tokens)
    AdController(store: store, catalog: catalog, cities: cities, shard: shard).register(on: api)
    return kit.makeApplication(router: router)
}
