import Contracts
import EventBus
import Logging
import RedisKit

/// Stores counted impressions and clicks from the `ad` stream, at the database's pace (as coupon's
/// claims are): Redis counted and charged them; the stream makes sure each is stored once. A read of
/// the stream is stored in one transaction, and each event's id with it. With the books in shards, it
/// reads each shard's stream and, in the same transaction, puts each event in the outbox for `ad` with
/// the same id, so analytics follows one stream however the books are split.
enum AdRecorder {
    static let group = "ad-store"

    static func consumers(
        store: AdStore, ledger: AdLedger, instance: String, wakeups: OutboxWakeups, configuration: EventConsumerConfiguration,
        logger: Logger
    ) -> [EventConsumer] {
        ledger.countStreams.map { stream in
            EventConsumer.batching(
                stream: stream, group: group, consumer: instance, redis: ledger.redis, configuration: configuration, logger: logger
            ) { envelopes in
                try await ProcessedEvents.each(envelopes, consumer: group, store: store.db) { envelope, db in
                    try store.record(try envelope.decode(AdEvents.Counted.self), isClick: envelope.type == AdEvents.Counted.clickType, in: db)
                    if ledger.republishes {
                        var published = envelope
                        published.stream = ledger.stream
                        published.entryID = nil
                        try Outbox.enqueue(published, in: db)
                    }
                }
                if ledger.republishes { wakeups.notify() }
            }
        }
    }
}

/// What the ad service learns from the other services' streams: riders' completed trips (for the `new`
/// and `frequent` segments) and the actions a click can lead to — a ride ordered (`order.created`) and
/// a coupon claimed — which become conversions of the click before them.
enum AdFollower {
    static let group = "ad"
    /// What a read gathers: a conversion or a segment may be a quarter of a second late, and a busy order
    /// stream costs a few reads a second instead of one per trickle of events.
    static let gathering = EventConsumerConfiguration(batchSize: 500, gather: .milliseconds(250))

    static func orders(
        store: AdStore, redis: RedisClient, stream: String, instance: String, shard: Shard = Shard(index: 0, of: 1), logger: Logger
    ) -> EventConsumer {
        EventConsumer.batching(
            stream: stream, group: shard.group(group), consumer: instance, redis: redis,
            configuration: gathering, logger: logger
        ) { envelopes in
            try await ProcessedEvents.each(envelopes, consumer: "ad-orders", store: store.db) { envelope, db in
                switch envelope.type {
                case OrderEvents.Created.type:
                    let order = try envelope.decode(OrderEvents.Created.self)
                    try store.recordAction(eventID: envelope.id, user: order.riderID, kind: "ride", at: order.createdAt, in: db)
                case "order.completed":
                    try store.addCompletedTrip(user: try envelope.decode(OrderEvents.Moved.self).riderID, in: db)
                default:
                    break
                }
            }
        }
    }

    static func couponClaims(
        store: AdStore, redis: RedisClient, stream: String, instance: String, shard: Shard = Shard(index: 0, of: 1), logger: Logger
    ) -> EventConsumer {
        EventConsumer.batching(
            stream: stream, group: shard.group(group), consumer: instance, redis: redis, configuration: gathering, logger: logger
        ) { envelopes in
            try await ProcessedEvents.each(envelopes, consumer: "ad-coupons", store: store.db) { envelope, db in
                guard envelope.type == CouponEvents.Claimed.type else { return }
                let claim = try envelope.decode(CouponEvents.Claimed.self)
                try store.recordAction(eventID: envelope.id, user: claim.userID, kind: "coupon", at: claim.claimedAt, in: db)
            }
        }
    }
}
