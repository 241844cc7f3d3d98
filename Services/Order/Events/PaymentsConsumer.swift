import Contracts
import EventBus
import Foundation
import HailKit
import Logging
import RedisKit

/// Marks orders paid from the payment stream: `payment.succeeded` moves its order from `completed` to
/// `paid` (one writer of an order's state: this service). A repeat finds the order paid and changes
/// nothing; an order that is not completed (an event that does not fit) is logged and left alone. A shard
/// of a split order service reads the stream in a group of its own (`order-s<k>`) and passes over the
/// payments of other shards' orders.
enum PaymentsConsumer {
    static let group = "order"

    static func consumer(
        store: OrderStore, cache: OrderCache, wakeups: OutboxWakeups, redis: RedisClient, instance: String,
        shard: Shard = Shard(index: 0, of: 1), logger: Logger
    ) -> EventConsumer {
        EventConsumer(
            stream: PaymentEvents.Succeeded.stream, group: shard.group(group), consumer: instance, redis: redis,
            configuration: EventConsumerConfiguration(), logger: logger
        ) { envelope in
            guard envelope.type == PaymentEvents.Succeeded.type else { return }
            let paid = try envelope.decode(PaymentEvents.Succeeded.self)
            guard shard.owns(id: paid.orderID) else { return }
            do {
                let (_, moved) = try await store.move(
                    paid.orderID, .init(to: .paid, actor: "payment", reason: "payment \(paid.paymentID)"),
                    now: Date().timeIntervalSince1970)
                guard moved else { return }
                wakeups.notify()
                try await cache.invalidate(paid.orderID)
                logger.info("order paid", metadata: ["order": "\(paid.orderID)", "payment": "\(paid.paymentID)"])
            } catch let problem as Problem where problem.status == .conflict || problem.status == .notFound {
                logger.error(
                    "a payment for an order that cannot be paid",
                    metadata: ["order": "\(paid.orderID)", "payment": "\(paid.paymentID)", "reason": "\(problem)"])
            }
        }
    }
}
