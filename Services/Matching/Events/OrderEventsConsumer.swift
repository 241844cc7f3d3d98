import Contracts
import EventBus
import Logging
import RedisKit

/// What matching learns from the order stream: new orders to dispatch (kept in its SQLite file before the
/// event is acknowledged), drivers taken by an assignment or a grab, and drivers freed when a trip ends.
enum OrderEventsConsumer {
    static let group = "matching"

    static func consumer(
        store: DispatchStore, fleet: DriverFleet, dispatch: DispatchService, redis: RedisClient, instance: String,
        configuration: EventConsumerConfiguration, logger: Logger
    ) -> EventConsumer {
        EventConsumer(
            stream: OrderEvents.Created.stream, group: group, consumer: instance, redis: redis,
            configuration: configuration, logger: logger
        ) { envelope in
            if envelope.type == OrderEvents.Created.type {
                let created = try envelope.decode(OrderEvents.Created.self)
                try await ProcessedEvents.once(envelope, consumer: group, store: store.db) { db in
                    try store.add(created, in: db)
                }
                return
            }
            let moved = try envelope.decode(OrderEvents.Moved.self)
            switch moved.to {
            case .assigned:
                if let driver = moved.driverID { try await fleet.markBusy(driver) }
                try await store.done(moved.orderID)
                dispatch.release(order: moved.orderID)
            case .completed, .cancelled:
                if let driver = moved.driverID, moved.from.holdsDriver {
                    try await fleet.markFree(driver)
                }
                try await store.done(moved.orderID)
                dispatch.release(order: moved.orderID)
            case .expired:
                try await store.done(moved.orderID)
            case .created, .offered, .arriving, .inTrip, .paid:
                break
            }
        }
    }
}
