import Configuration
import Contracts
import EventBus
import Foundation
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// Builds the order service from configuration.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys), `auth.denylist.check`
/// (true); fares `order.fare.base.cents` (250),
/// `order.fare.per.km.cents` (120), `order.fare.minimum.cents` (500), `order.currency` (EUR),
/// `order.max.km` (200); surge `order.surge.key` (the Redis hash, `order:surge`), `order.surge.cell.degrees`
/// (0.02, about 2 km), `order.surge.default` (1.0); the cache `order.cache.prefix` (`order:cache`),
/// `order.cache.ttl.seconds` (60); expiry `order.expiry.seconds` (120: orders not matched by then expire),
/// `order.expiry.scan.seconds` (1). Orders become `paid` from the payment stream. With `shards` naming
/// more than one for order, this instance owns shard `shard`: its new orders' ids name it, and it marks
/// paid only the orders it owns.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "order", reader: reader, defaultPort: 9002)
    let tokens = try await kit.accessTokens()
    let database = try await kit.openDatabase(migrations: OrderStore.migrations)
    let store = OrderStore(db: database, source: kit.name)
    let wakeups = OutboxWakeups()
    let cache = OrderCache(
        redis: kit.redis, prefix: reader.string(forKey: "order.cache.prefix", default: "order:cache"),
        ttlSeconds: max(1, try reader.int(forKey: "order.cache.ttl.seconds", default: 60, in: 1...86_400)))
    let fares = FareRules(
        baseCents: try reader.int(forKey: "order.fare.base.cents", default: 250, in: 0...1_000_000),
        perKmCents: try reader.int(forKey: "order.fare.per.km.cents", default: 120, in: 0...1_000_000),
        minimumCents: try reader.int(forKey: "order.fare.minimum.cents", default: 500, in: 0...1_000_000),
        currency: reader.string(forKey: "order.currency", default: "EUR"),
        maximumKm: try reader.double(forKey: "order.max.km", default: 200, in: 0.001...20_000))
    let surge = SurgeTable(
        redis: kit.redis, key: reader.string(forKey: "order.surge.key", default: "order:surge"),
        cellDegrees: try reader.double(forKey: "order.surge.cell.degrees", default: 0.02, in: 0.0001...10),
        defaultFactor: try reader.double(forKey: "order.surge.default", default: 1.0, in: 0.1...10))

    kit.relayOutbox(of: database, wakeups: wakeups)
    // `order.quotes.publish.ms` (1000): how often the quotes given are published to `order.quotes`.
    let quotes = QuoteTally.quotes(redis: kit.redis, source: kit.name)
    kit.addService(quotes.periodic(
        every: .milliseconds(try reader.int(forKey: "order.quotes.publish.ms", default: 1000, in: 10...60_000)), logger: kit.logger))
    kit.trimStreams([OrderEvents.Created.stream, QuoteEvents.Given.stream])
    kit.addService(PaymentsConsumer.consumer(
        store: store, cache: cache, wakeups: wakeups, redis: kit.redis, instance: kit.configuration.instanceID,
        shard: kit.configuration.ownShard, logger: kit.logger))
    kit.addService(OrderExpiryService(
        store: store, cache: cache, wakeups: wakeups,
        after: .seconds(max(1, try reader.int(forKey: "order.expiry.seconds", default: 120, in: 1...86_400))), logger: kit.logger
    ).periodic(every: .seconds(max(1, try reader.int(forKey: "order.expiry.scan.seconds", default: 1, in: 1...3600)))))

    let router = kit.makeRouter()
    let api = try kit.authenticated(router, tokens: tokens)
    OrderController(store: store, cache: cache, fares: fares, surge: surge, wakeups: wakeups, quotes: quotes,
        shard: kit.configuration.ownShard).register(on: api)
    return kit.makeApplication(router: router)
}
