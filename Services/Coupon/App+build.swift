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
/// `coupon.redis.prefix` (Redis key prefix of the sale's counters, `coupon`), and for the claims stream
/// `coupon.claims.stream` (its name, `coupon.claims`), `coupon.claims.batch` (64), `coupon.claims.reclaim.seconds` (how long a claim may sit delivered but
/// unstored before another instance takes it over, 30) and `coupon.claims.max.deliveries` (10).
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "coupon", reader: reader, defaultPort: 9005)
    guard !kit.configuration.redis.cluster else {
        throw ConfigurationError("coupon cannot run on a Redis Cluster yet (redis.cluster): its claim script appends to the claims stream beside the campaign's counters, and they do not share a slot yet")
    }
    let tokens = try await kit.accessTokens()
    let database = try await kit.openDatabase(migrations: CouponStore.migrations)
    let store = CouponStore(db: database)
    let stream = reader.string(forKey: "coupon.claims.stream", default: CouponEvents.Claimed.stream)
    let sale = FlashSale(
        redis: kit.redis, keyPrefix: reader.string(forKey: "coupon.redis.prefix", default: "coupon"), source: kit.name,
        stream: stream)

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
        batchSize: reader.int(forKey: "coupon.claims.batch", default: 64),
        reclaimAfter: .seconds(reader.int(forKey: "coupon.claims.reclaim.seconds", default: 30)),
        reclaimInterval: .seconds(max(1, reader.int(forKey: "coupon.claims.reclaim.seconds", default: 30) / 2)),
        maxDeliveries: reader.int(forKey: "coupon.claims.max.deliveries", default: 10))
    kit.addService(ClaimRecorder.consumer(
        store: store, redis: kit.redis, stream: stream, instance: kit.configuration.instanceID,
        configuration: consumerConfiguration,
        logger: kit.logger))
    kit.addService(PaymentFailures.consumer(
        store: store, redis: kit.redis, instance: kit.configuration.instanceID, logger: kit.logger))
    kit.relayOutbox(of: database, wakeups: OutboxWakeups())
    kit.trimStreams([stream])
    kit.pruneProcessedEvents(in: database)

    let router = kit.makeRouter()
    let api = kit.authenticated(router, tokens: tokens)
    let controller = CouponController(store: store, sale: sale)
    controller.register(on: api)
    controller.registerRedemption(on: api)
    return kit.makeApplication(router: router)
}
