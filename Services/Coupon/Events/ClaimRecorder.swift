import Contracts
import EventBus
import Logging
import RedisKit
import SQLiteKit

/// Stores the claims the flash sale granted, from each bucket's claims stream, at the database's pace:
/// the outbox pattern in reverse (Redis accepted the claim; the stream guarantees it is stored). An
/// entry is acknowledged only after its row is committed, so a crash between the two replays it, and
/// the event id recorded in the same transaction makes the replay a no-op. The same transaction puts
/// the claim in the outbox for the public `coupon.claims` stream, with the same event id: ad, analytics
/// and the command centre follow one stream however the stock is split.
enum ClaimRecorder {
    static let group = "coupon-store"

    /// One consumer per bucket stream of `sale`.
    static func consumers(
        store: CouponStore, sale: FlashSale, instance: String, wakeups: OutboxWakeups,
        configuration: EventConsumerConfiguration, logger: Logger
    ) -> [EventConsumer] {
        sale.claimsStreams.map { stream in
            // A read of the stream stored in one transaction (a flash sale writes thousands a second).
            EventConsumer.batching(
                stream: stream, group: group, consumer: instance, redis: sale.redis,
                configuration: configuration, logger: logger
            ) { envelopes in
                try await ProcessedEvents.each(envelopes, consumer: group, store: store.db) { envelope, db in
                    try store.record(try envelope.decode(CouponEvents.Claimed.self), in: db)
                    var published = envelope
                    published.stream = sale.stream
                    published.entryID = nil
                    try Outbox.enqueue(published, in: db)
                }
                wakeups.notify()
            }
        }
    }
}
