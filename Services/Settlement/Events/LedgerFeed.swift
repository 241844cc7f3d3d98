import Contracts
import EventBus
import Logging
import RedisKit
import SQLiteKit

/// What settlement keeps from the other services' streams: completed (and paid) orders from `order`,
/// payments and refunds with their ledger entries from `payment`. Each event is stored once, in the same
/// transaction as the record that it was handled.
enum LedgerFeed {
    static let group = "settlement"

    static func consumers(store: SettlementStore, redis: RedisClient, instance: String, logger: Logger) -> [EventConsumer] {
        // Each read in one transaction (settlement's file syncs every commit): the events it keeps, in order.
        let orders = EventConsumer.batching(
            stream: OrderEvents.Moved.stream, group: group, consumer: instance, redis: redis,
            configuration: EventConsumerConfiguration(), logger: logger
        ) { envelopes in
            let kept = envelopes.filter { $0.type == OrderState.completed.eventType || $0.type == OrderState.paid.eventType }
            try await ProcessedEvents.each(kept, consumer: group, store: store.db) { envelope, db in
                let moved = try envelope.decode(OrderEvents.Moved.self)
                if envelope.type == OrderState.completed.eventType {
                    try store.recordCompleted(moved, in: db)
                } else {
                    try store.recordPaid(moved, in: db)
                }
            }
        }
        let payments = EventConsumer.batching(
            stream: PaymentEvents.Succeeded.stream, group: group, consumer: instance, redis: redis,
            configuration: EventConsumerConfiguration(), logger: logger
        ) { envelopes in
            let kept = envelopes.filter { $0.type == PaymentEvents.Succeeded.type || $0.type == PaymentEvents.Refunded.type }
            try await ProcessedEvents.each(kept, consumer: group, store: store.db) { envelope, db in
                if envelope.type == PaymentEvents.Succeeded.type {
                    try store.recordPayment(try envelope.decode(PaymentEvents.Succeeded.self), in: db)
                } else {
                    try store.recordRefund(try envelope.decode(PaymentEvents.Refunded.self), in: db)
                }
            }
        }
        return [orders, payments]
    }
}
