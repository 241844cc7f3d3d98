import Configuration
import Contracts
import EventBus
import Foundation
import HailKit
import Hummingbird
import Logging
import RedisKit
import SQLiteKit

/// Builds the coupon service from configuration.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys), `auth.denylist.check` (true),
/// `coupon.redis.prefix` (Redis key prefix of the sale's counters, `coupon`), `coupon.stock.buckets` (how
/// many buckets a campaign's stock is split into, each on a slot of its own: 1 on one Redis, 3 on a
/// Redis Cluster; 1 to 64), `coupon.redis.wait.replicas` (replicas of a bucket's master that must have a
/// claim before it is answered, Redis's `WAIT` on a connection of its own: 0) and `coupon.redis.wait.ms` (how long to wait for them, 100), and for the
/// claims streams `coupon.claims.stream` (the public stream's name, `coupon.claims`; each bucket's is
/// named after it), `coupon.claims.batch` (64), `coupon.claims.reclaim.seconds` (how long a claim may sit
/// delivered but unstored before another instance takes it over, 30) and `coupon.claims.max.deliveries` (10).
/// With `shards` naming more than one for coupon, this instance owns shard `shard`: the campaigns it
/// creates, their claims (made here, since a claim goes to its campaign's owner) and their redemptions;
/// its ids name it, and its buckets' claims streams and its group on the payment stream are its own.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    // A claim is one Lua script: its handler is short, and running it on the loop that carries its
    // connection and its Redis answer spares two thread hand-overs per claim (docs/benchmarks.md).
    var kit = try ServiceKit(name: "coupon", reader: reader, defaultPort: 9005, defaultHandlersOnLoop: true)
    let tokens = try await kit.accessTokens()
    let database = try await kit.openDatabase(migrations: CouponStore.migrations)
    let store = CouponStore(db: database)
    let stream = try reader.keyName(forKey: "coupon.claims.stream", default: CouponEvents.Claimed.stream)
    let keyPrefix = try reader.keyName(forKey: "coupon.redis.prefix", default: "coupon")
    let buckets = try reader.int(forKey: "coupon.stock.buckets", default: kit.configuration.redis.cluster ? 3 : 1, in: 1...64)
    let replicas = try reader.int(forKey: "coupon.redis.wait.replicas", default: 0, in: 0...16)
    let waitMilliseconds = try reader.int(forKey: "coupon.redis.wait.ms", default: 100, in: 1...10_000)
    var sale = FlashSale(
        redis: kit.redis, keyPrefix: keyPrefix, source: kit.name, stream: stream,
        buckets: SaleBuckets(count: buckets, keyPrefix: keyPrefix)
    ).withReplicas(replicas, timeout: .milliseconds(waitMilliseconds))
    sale.logger = kit.logger
    sale.shard = kit.configuration.ownShard

    // Campaigns still running are opened again: a no-op when Redis kept them, a rebuild of the stock,
    // each rider's count and the idempotency answers from the stored claims when Redis lost them.
    // A campaign that cannot be opened is logged and left closed rather than stopping the service (and
    // every other sale) at each start; only Redis out of reach stops it, since then no sale could open.
    for campaign in try await store.current(now: Date().timeIntervalSince1970) {
        do {
            guard Bounds.isEpochSeconds(campaign.startsAt), Bounds.isEpochSeconds(campaign.endsAt), campaign.stock >= 0 else {
                throw ConfigurationError("its sale window or stock is out of range")
            }
            if case .restored(let claimed) = try await sale.restoreIfMissing(campaign, store: store) {
                kit.logger.notice("sale restored from the stored claims", metadata: ["campaign": "\(campaign.id)", "claimed": "\(claimed)"])
            }
        } catch let error as RedisError {
            throw error
        } catch {
            kit.logger.error("campaign not opened", metadata: ["campaign": "\(campaign.id)", "error": "\(error)"])
        }
    }

    let consumerConfiguration = EventConsumerConfiguration(
        batchSize: try reader.int(forKey: "coupon.claims.batch", default: 64, in: 1...10_000),
        reclaimAfter: .seconds(try reader.int(forKey: "coupon.claims.reclaim.seconds", default: 30, in: 1...86_400)),
        reclaimInterval: .seconds(max(1, try reader.int(forKey: "coupon.claims.reclaim.seconds", default: 30, in: 1...86_400) / 2)),
        maxDeliveries: try reader.int(forKey: "coupon.claims.max.deliveries", default: 10, in: 1...1000))
    let wakeups = OutboxWakeups()
    for consumer in ClaimRecorder.consumers(
        store: store, sale: sale, instance: kit.configuration.instanceID, wakeups: wakeups,
        configuration: consumerConfiguration, logger: kit.logger)
    {
        kit.addService(consumer)
    }
    kit.addService(PaymentFailures.consumer(
        store: store, redis: kit.redis, instance: kit.configuration.instanceID, shard: kit.configuration.ownShard, logger: kit.logger))
    kit.relayOutbox(of: database, wakeups: wakeups)
    kit.trimStreams([stream] + sale.claimsStreams)
    kit.pruneProcessedEvents(in: database)

    let router = kit.makeRouter()
    let api = try kit.authenticated(router, tokens: tokens)
    let controller = CouponController(store: store, sale: sale, shard: kit.configuration.ownShard)
    controller.register(on: api)
    controller.registerRedemption(on: api)
    return kit.makeApplication(router: router)
}
