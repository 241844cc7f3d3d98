import Contracts
import EventBus
import Logging
import RedisKit

/// Gives coupons back from the payment stream: a `payment.failed` naming a coupon returns it to the
/// rider's wallet. Payment gives it back directly too; this is what makes it certain when that call did
/// not get through. Releasing is idempotent and safe out of order: only a coupon still held by that
/// payment changes, so a late `payment.failed` cannot take back a coupon a later payment redeemed.
enum PaymentFailures {
    static let group = "coupon"

    static func consumer(
        store: CouponStore, redis: RedisClient, instance: String, shard: Shard = Shard(index: 0, of: 1), logger: Logger
    ) -> EventConsumer {
        EventConsumer(
            stream: PaymentEvents.Failed.stream, group: shard.group(group), consumer: instance, redis: redis,
            configuration: EventConsumerConfiguration(), logger: logger
        ) { envelope in
            guard envelope.type == PaymentEvents.Failed.type else { return }
            let failed = try envelope.decode(PaymentEvents.Failed.self)
            // Each shard's group reads every failure and gives back only its own coupons.
            guard let claim = failed.couponID, shard.owns(id: claim) else { return }
            if try await store.release(claim: claim, order: failed.orderID, payment: failed.paymentID) {
                logger.info("coupon given back after a failed payment", metadata: ["claim": "\(claim)", "order": "\(failed.orderID)"])
            }
        }
    }
}
