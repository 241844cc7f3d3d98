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
        EventConsumer(
            stream: stream, group: group, consumer: instance, redis: redis,
            configuration: configuration, logger: logger
        ) { envelope in
            let claim = try envelope.decode(CouponEvents.Claimed.self)
            try await ProcessedEvents.once(envelope, consumer: group, store: store.db) { db in
                try store.record(claim, in: db)
            }
        }
    }
}
