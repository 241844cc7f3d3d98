import Contracts
import EventBus
import Foundation
import HailKit
import Logging
import RedisKit

/// Turns order events into pushes: the drivers an order is offered to, and the rider and driver of every
/// later move, get a `PushMessage` on their pub/sub channel. The gateway instances share one consumer
/// group, so each event is published once; `PushListener` on every instance delivers it.
enum PushRelay {
    static let group = "gateway-push"

    /// `sharded`: publishes with `SPUBLISH` (a Redis Cluster's gateways subscribe with `SSUBSCRIBE`).
    static func consumer(redis: RedisClient, instance: String, sharded: Bool = false, logger: Logger) -> EventConsumer {
        let publish = sharded ? "SPUBLISH" : "PUBLISH"
        // Each read's pushes go to Redis in one pipeline: a rush hour's order stream is over a thousand
        // events a second, and a round trip each was most of what relaying them cost.
        return EventConsumer.batching(
            stream: OrderEvents.Moved.stream, group: group, consumer: instance, redis: redis,
            // A push about a ride long over is noise: a group made now starts with the events to come.
            configuration: EventConsumerConfiguration(batchSize: 256, reclaimAfter: .seconds(10), reclaimInterval: .seconds(5), startsAtNewest: true),
            logger: logger
        ) { envelopes in
            var commands: [RedisCommand] = []
            for envelope in envelopes where envelope.type != OrderEvents.Created.type {
                let moved = try envelope.decode(OrderEvents.Moved.self)
                let recipients = Self.recipients(of: moved)
                guard !recipients.isEmpty else { continue }
                let message = PushMessage(
                    type: envelope.type, orderID: moved.orderID, state: moved.to, riderID: moved.riderID,
                    driverID: moved.driverID, at: moved.at, reason: moved.reason)
                let text = String(decoding: try JSONBody.encoder.encode(message), as: UTF8.self)
                commands.append(contentsOf: recipients.map { RedisCommand(publish, PushMessage.channel(user: $0), text) })
            }
            if !commands.isEmpty { _ = try await redis.pipeline(commands) }
        }
    }

    /// Who hears of a move: the offered drivers of an offer; the rider and the driver of everything after.
    static func recipients(of moved: OrderEvents.Moved) -> [String] {
        switch moved.to {
        case .offered:
            return moved.offeredTo ?? []
        case .assigned, .arriving, .inTrip, .completed, .paid, .cancelled, .expired:
            return [moved.riderID] + (moved.driverID.map { [$0] } ?? [])
        case .created:
            return []
        }
    }
}
