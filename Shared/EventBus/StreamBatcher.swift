import Contracts
import Foundation
import HailKit
import Logging
import Metrics
import RedisKit
import Synchronization

/// Facts too many and too cheap to go through a transactional outbox one by one — drivers' fixes,
/// quotes — gathered in memory and published as one stream entry per batch.
///
/// What it costs: a crash loses what was gathered since the last publish (at most one interval), and
/// while Redis does not answer, at most `capacity` items wait; beyond that the oldest are dropped and
/// counted (`hailstorm_stream_batch_dropped_total{stream}`). The stream is capped near `maxLength`
/// entries (`XADD MAXLEN ~`), so a stream nobody reads stays bounded.
public final class StreamBatcher<Item: Sendable, Event: DomainEvent>: Sendable {
    let redis: RedisClient
    let source: String
    let capacity: Int
    let batchSize: Int
    let maxLength: Int
    let wrap: @Sendable ([Item]) -> Event
    private let pending = Mutex<[Item]>([])
    private let dropped: Counter
    private let published: Counter

    public init(
        redis: RedisClient, source: String, capacity: Int = 100_000, batchSize: Int = 1000, maxLength: Int = 200_000,
        wrap: @escaping @Sendable ([Item]) -> Event
    ) {
        self.redis = redis
        self.source = source
        self.capacity = max(1, capacity)
        self.batchSize = max(1, batchSize)
        self.maxLength = max(1, maxLength)
        self.wrap = wrap
        self.dropped = Counter(label: "hailstorm_stream_batch_dropped_total", dimensions: [("stream", Event.stream)])
        self.published = Counter(label: "hailstorm_stream_batch_items_total", dimensions: [("stream", Event.stream)])
    }

    public func add(_ items: some Collection<Item>) {
        guard !items.isEmpty else { return }
        let over = pending.withLock { pending -> Int in
            pending.append(contentsOf: items)
            let over = pending.count - capacity
            if over > 0 { pending.removeFirst(over) }
            return max(0, over)
        }
        if over > 0 { dropped.increment(by: over) }
    }

    public func add(_ item: Item) { add(CollectionOfOne(item)) }

    /// Publishes what was gathered, `batchSize` items per entry, in one pipeline. On failure the items go
    /// back in the queue for the next run: delivery is at least once (a pipeline that failed halfway
    /// publishes its first entries again), so consumers make an item's effect idempotent where it matters.
    @discardableResult
    public func publish() async throws -> Int {
        let items = pending.withLock { pending -> [Item] in
            defer { pending.removeAll(keepingCapacity: true) }
            return pending
        }
        guard !items.isEmpty else { return 0 }
        let key = EventEnvelope.streamKey(Event.stream)
        var commands: [RedisCommand] = []
        var start = items.startIndex
        while start < items.endIndex {
            let end = min(start + batchSize, items.endIndex)
            let envelope = try EventEnvelope(wrap(Array(items[start..<end])), source: source)
            commands.append(RedisClient.xaddCommand(key, fields: envelope.fields, maxLength: maxLength))
            start = end
        }
        do {
            try await redis.sendAll(commands)
        } catch {
            add(items)  // back in the queue, behind anything gathered meanwhile; capacity still holds
            throw error
        }
        published.increment(by: items.count)
        return items.count
    }

    /// Publishing as periodic work, with a last publish at shutdown.
    public func periodic(every interval: Duration, logger: Logger) -> PeriodicWork {
        PeriodicWork("publish-\(Event.stream)", every: interval, maxBackoff: .seconds(5), finalRun: true, logger: logger) {
            _ = try await self.publish()
            return .done
        }
    }
}
