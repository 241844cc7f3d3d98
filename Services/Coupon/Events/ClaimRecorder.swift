import Contracts
import EventBus
import Logging
import RedisKit
import SQLiteKit

/// Stores the claims the flash sale granted, from the `coupon.claims` stream, at the database's pace:
/// the outbox pattern in reverse (Redis accepted the claim; the stream guarantees it is stored). An
/// entry is acknowledged only after its row is committed, so a crash between the two replays it, and
/// the event id recorded in the same transaction makes the replay a no-op.
enum ClaimRecorder {
    static let group = "coupon-store"

    static func consumer(
        store: CouponStore, redis: RedisClient, stream: String, instance: String,
        configuration: EventConsumerConfiguration, logger: Logger
    ) -> EventConsumer {
        // A read of the stream stored in one transaction (a flash sale writes thousands a second).
        EventConsumer.batching(
            stream: stream, group: group, consumer: instance, redis: redis,
            configuration: configuration, logger: logger
        ) { envelopes in
            try await ProcessedEvents.each(envelopes, consumer: group, store: store.db) { envelope, db in
                try store.record(try envelope.decode(CouponEvents.Claimed.self), in: db)
            }
        }
    }
}
