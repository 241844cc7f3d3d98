import Contracts
import EventBus
import Logging
import RedisKit

/// What matching learns from the order stream: new orders to dispatch (kept in its SQLite file before the
/// event is acknowledged), drivers taken by an assignment or a grab, and drivers freed when a trip ends.
///
/// Safe out of order: an order that left dispatch is remembered (`left_dispatch`), so an `order.created`
/// delivered after its assignment does not dispatch it again and an `order.assigned` delivered after the
/// trip ended does not make its driver busy; a driver is freed only by the end of the order they are on.
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
                try await store.done(moved.orderID)
                if let driver = moved.driverID, try await !store.hasEnded(moved.orderID) {
                    try await fleet.markBusy(driver, order: moved.orderID)
                }
                dispatch.release(order: moved.orderID)
            case .completed, .cancelled:
                try await store.ended(moved.orderID)
                if let driver = moved.driverID, moved.from.holdsDriver {
                    try await fleet.markFree(driver, order: moved.orderID)
                }
                dispatch.release(order: moved.orderID)
            case .expired:
                try await store.ended(moved.orderID)
            case .created, .offered, .arriving, .inTrip, .paid:
                break
            }
        }
    }
}
