import Contracts
import EventBus
import Logging
import RedisKit

/// What settlement keeps from the other services' streams: completed (and paid) orders from `order`,
/// payments and refunds with their ledger entries from `payment`. Each event is stored once, in the same
/// transaction as the record that it was handled.
enum LedgerFeed {
    static let group = "settlement"

    static func consumers(store: SettlementStore, redis: RedisClient, instance: String, logger: Logger) -> [EventConsumer] {
        let orders = EventConsumer(
            stream: OrderEvents.Moved.stream, group: group, consumer: instance, redis: redis,
            configuration: EventConsumerConfiguration(), logger: logger
        ) { envelope in
            switch envelope.type {
            case OrderState.completed.eventType:
                let moved = try envelope.decode(OrderEvents.Moved.self)
                try await ProcessedEvents.once(envelope, consumer: group, store: store.db) { db in try store.recordCompleted(moved, in: db) }
            case OrderState.paid.eventType:
                let moved = try envelope.decode(OrderEvents.Moved.self)
                try await ProcessedEvents.once(envelope, consumer: group, store: store.db) { db in try store.recordPaid(moved, in: db) }
            default:
                return
            }
        }
        let payments = EventConsumer(
            stream: PaymentEvents.Succeeded.stream, group: group, consumer: instance, redis: redis,
            configuration: EventConsumerConfiguration(), logger: logger
        ) { envelope in
            switch envelope.type {
            case PaymentEvents.Succeeded.type:
                let paid = try envelope.decode(PaymentEvents.Succeeded.self)
                try await ProcessedEvents.once(envelope, consumer: group, store: store.db) { db in try store.recordPayment(paid, in: db) }
            case PaymentEvents.Refunded.type:
                let refund = try envelope.decode(PaymentEvents.Refunded.self)
                try await ProcessedEvents.once(envelope, consumer: group, store: store.db) { db in try store.recordRefund(refund, in: db) }
            default:
                return
            }
        }
        return [orders, payments]
    }
}
