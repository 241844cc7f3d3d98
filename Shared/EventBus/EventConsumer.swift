import Contracts
import Foundation
import Logging
import Metrics
import RedisKit
import ServiceLifecycle

/// How a consumer group member reads its stream.
public struct EventConsumerConfiguration: Sendable {
    /// Entries read per `XREADGROUP`.
    public var batchSize: Int
    /// How long one read blocks waiting for new entries.
    public var block: Duration
    /// An entry pending this long is taken to belong to a dead or stuck consumer and is reclaimed.
    public var reclaimAfter: Duration
    /// How often pending entries are scanned for reclaiming.
    public var reclaimInterval: Duration
    /// Deliveries after which an entry goes to the dead-letter stream instead of being handled again.
    public var maxDeliveries: Int
    /// Where a group made now starts: at the stream's first entry (every event that was ever published,
    /// for state that must see them all), or only at entries added from now on (for notifications, where
    /// an old event is noise). An existing group keeps its place either way.
    public var startsAtNewest: Bool
    /// After a read that did not fill a batch, how long to wait before the next: a consumer that stores
    /// each read in one transaction then commits a few times a second instead of once per trickle of
    /// events, at the cost of that much more lag. Zero (the default) reads again at once.
    public var gather: Duration

    public init(
        batchSize: Int = 64,
        block: Duration = .milliseconds(500),
        reclaimAfter: Duration = .seconds(30),
        reclaimInterval: Duration = .seconds(5),
        maxDeliveries: Int = 5,
        startsAtNewest: Bool = false,
        gather: Duration = .zero
    ) {
        self.gather = gather
        self.batchSize = batchSize
        self.block = block
        self.reclaimAfter = reclaimAfter
        self.reclaimInterval = reclaimInterval
        self.maxDeliveries = max(1, maxDeliveries)
        self.startsAtNewest = startsAtNewest
    }
}

/// A member of a consumer group on one event stream.
///
/// Reads new entries, hands each to the handler and acknowledges it when the handler returns. An entry
/// whose handler threw stays pending; so does every entry of a consumer that died before acknowledging.
/// Every `reclaimInterval`, entries pending longer than `reclaimAfter` are taken over (`XAUTOCLAIM`) and
/// handled again, here; an entry delivered `maxDeliveries` times goes to the dead-letter stream
/// `events:<stream>:dead` with the reason, and is acknowledged. Handlers must tolerate repeats: wrap them
/// with `ProcessedEvents.once` or make them idempotent otherwise.
///
/// A consumer given a `batchHandler` hands it every well-formed entry of a read at once (in stream
/// order), so a busy stream costs one transaction and one round trip per read instead of per entry. When
/// the batch handler throws, the entries are handled one by one with `handler`, which isolates the entry
/// at fault (it stays pending, then goes to the dead-letter stream) and lets the others through; since the
/// batch may have been partly applied, handlers must tolerate repeats here too.
public struct EventConsumer: Service {
    public let stream: String
    public let group: String
    public let consumer: String
    let redis: RedisClient
    let configuration: EventConsumerConfiguration
    let handler: @Sendable (EventEnvelope) async throws -> Void
    private(set) var batchHandler: (@Sendable ([EventEnvelope]) async throws -> Void)?
    let logger: Logger

    public init(
        stream: String,
        group: String,
        consumer: String,
        redis: RedisClient,
        configuration: EventConsumerConfiguration = .init(),
        logger: Logger,
        handler: @escaping @Sendable (EventEnvelope) async throws -> Void
    ) {
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.redis = redis
        self.configuration = configuration
        self.logger = logger
        self.handler = handler
        self.batchHandler = nil
    }

    /// A consumer that handles each read as one batch (`batchHandler`); one entry at a time, with the
    /// batch handler given that one entry, when a batch fails.
    public static func batching(
        stream: String,
        group: String,
        consumer: String,
        redis: RedisClient,
        configuration: EventConsumerConfiguration = .init(),
        logger: Logger,
        batchHandler: @escaping @Sendable ([EventEnvelope]) async throws -> Void
    ) -> EventConsumer {
        var made = EventConsumer(
            stream: stream, group: group, consumer: consumer, redis: redis, configuration: configuration, logger: logger
        ) { try await batchHandler([$0]) }
        made.batchHandler = batchHandler
        return made
    }

    var key: String { EventEnvelope.streamKey(stream) }

    public func run() async throws {
        var connection: RedisConnection? = nil
        var lastReclaim = ContinuousClock.now - configuration.reclaimInterval
        var failures = 0
        var resumed = false
        // Handled by the last read, acknowledged with the next (or at the end): one round trip per read.
        var handled: [String] = []
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                if connection == nil || connection?.isActive == false {
                    try await redis.xgroupCreate(key, group: group, startAt: configuration.startsAtNewest ? "$" : "0")
                    connection = try await redis.dedicatedConnection(forKey: key)
                }
                if !resumed {
                    try await resumeOwnPending()
                    resumed = true
                }
                if ContinuousClock.now - lastReclaim >= configuration.reclaimInterval {
                    lastReclaim = .now
                    try await reclaim()
                }
                let entries = try await RedisClient.xreadgroup(
                    on: connection!, stream: key, group: group, consumer: consumer,
                    count: configuration.batchSize, block: configuration.block, acknowledging: handled)
                acknowledged(handled.count)
                handled = await handle(entries)
                failures = 0
                if configuration.gather > .zero, !entries.isEmpty, entries.count < configuration.batchSize {
                    try await Task.sleep(for: configuration.gather)
                }
            } catch is CancellationError {
                break
            } catch {
                failures += 1
                // A new connection next time, to whichever server holds the stream then (in a cluster,
                // a slot can move).
                await connection?.close()
                connection = nil
                logger.warning("consumer read failed; retrying", metadata: ["stream": "\(key)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(min(100 * failures, 2000)))
            }
        }
        await connection?.close()
        if !handled.isEmpty, (try? await redis.xack(key, group: group, ids: handled)) != nil { acknowledged(handled.count) }
    }

    /// Handles what this consumer name was given before and never acknowledged: a process restarted
    /// under a stable name (a StatefulSet pod, a configured `instance.id`) picks up where it died at once,
    /// instead of waiting `reclaimAfter` for another member to reclaim it.
    func resumeOwnPending() async throws {
        var cursor = "0"
        while !Task.isCancelled {
            let entries = try await redis.xreadgroup(
                stream: key, group: group, consumer: consumer, count: configuration.batchSize, id: cursor)
            guard let last = entries.last else { return }
            logger.info("resuming unacknowledged events", metadata: ["stream": "\(key)", "count": "\(entries.count)"])
            try await handleBatch(entries)
            cursor = last.id
        }
    }

    /// Takes over entries that stayed pending too long and handles them (or dead-letters them).
    public func reclaim() async throws {
        var cursor = "0-0"
        repeat {
            let (next, entries) = try await redis.xautoclaim(
                key, group: group, consumer: consumer, minIdle: configuration.reclaimAfter, start: cursor, count: 100)
            for entry in entries {
                let deliveries = try await redis.xpending(key, group: group, start: entry.id, end: entry.id, count: 1)
                    .first?.deliveries ?? 1
                if deliveries > configuration.maxDeliveries {
                    try await deadLetter(entry, reason: "handler failed \(deliveries - 1) times")
                } else {
                    logger.info("reclaimed event", metadata: ["stream": "\(key)", "entry": "\(entry.id)", "delivery": "\(deliveries)"])
                    try await handleBatch([entry])
                }
            }
            cursor = next
        } while cursor != "0-0" && !Task.isCancelled
    }

    /// Handles entries in order and acknowledges the handled ones with one `XACK`. A crash before that
    /// acknowledgement delivers them again, which handlers tolerate by contract.
    private func handleBatch(_ entries: [StreamEntry]) async throws {
        let handled = await handle(entries)
        guard !handled.isEmpty else { return }
        try await redis.xack(key, group: group, ids: handled)
        acknowledged(handled.count)
    }

    private func acknowledged(_ count: Int) {
        guard count > 0 else { return }
        Counter(label: "hailstorm_events_consumed_total", dimensions: [("stream", stream), ("group", group)]).increment(by: count)
    }

    /// Handles entries in order (as one batch when the consumer has a batch handler); returns the ids of
    /// those handled, to be acknowledged. Cancellation leaves the whole read unacknowledged.
    private func handle(_ entries: [StreamEntry]) async -> [String] {
        var handled: [String] = []
        if entries.count > 1, let batchHandler {
            let envelopes = entries.compactMap { EventEnvelope(entry: $0, stream: stream) }
            // A malformed entry among them: one by one, so it is dead-lettered.
            if envelopes.count == entries.count {
                do {
                    try await batchHandler(envelopes)
                    handled = entries.map(\.id)
                } catch is CancellationError {
                    return []
                } catch {
                    logger.debug(
                        "batch failed; handling its events one by one",
                        metadata: ["stream": "\(key)", "count": "\(entries.count)", "error": "\(error)"])
                }
            }
        }
        if handled.isEmpty {
            for entry in entries where await handle(entry) { handled.append(entry.id) }
        }
        return handled
    }

    /// Runs the handler; true when the entry is done with and may be acknowledged. Malformed entries are
    /// dead-lettered (which acknowledges them) and failures left pending.
    private func handle(_ entry: StreamEntry) async -> Bool {
        guard let envelope = EventEnvelope(entry: entry, stream: stream) else {
            do {
                try await deadLetter(entry, reason: "not an event envelope")
            } catch {
                logger.error("cannot dead-letter malformed entry", metadata: ["entry": "\(entry.id)", "error": "\(error)"])
            }
            return false
        }
        do {
            try await handler(envelope)
            return true
        } catch {
            // Left pending: reclaimed after `reclaimAfter`, dead-lettered after `maxDeliveries`.
            Counter(label: "hailstorm_events_failed_total", dimensions: [("stream", stream), ("group", group)]).increment()
            logger.warning(
                "event handler failed",
                metadata: ["stream": "\(key)", "event": "\(envelope.id)", "type": "\(envelope.type)", "error": "\(error)"])
            return false
        }
    }

    private func deadLetter(_ entry: StreamEntry, reason: String) async throws {
        var fields: [(String, any RESPArgumentConvertible)] = entry.fields.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        fields.append(("dead_reason", reason))
        fields.append(("dead_group", group))
        fields.append(("original_entry", entry.id))
        _ = try await redis.pipeline([
            RedisClient.xaddCommand(EventEnvelope.deadLetterKey(stream), fields: fields),
            RedisCommand("XACK", key, group, entry.id),
        ])
        Counter(label: "hailstorm_events_dead_lettered_total", dimensions: [("stream", stream), ("group", group)]).increment()
        logger.error("event dead-lettered", metadata: ["stream": "\(key)", "entry": "\(entry.id)", "reason": "\(reason)"])
    }
}
