import HailKit
import SQLiteKit

extension ServiceKit {
    /// Publishes what `store`'s outbox holds to Redis (`OutboxRelay`), woken by `wakeups` and lingering
    /// `events.outbox.linger.ms` after each wake-up for the commits right behind it.
    public mutating func relayOutbox(of store: SQLiteStore, wakeups: OutboxWakeups) {
        addService(OutboxRelay(store: store, redis: redis, wakeups: wakeups, linger: configuration.outboxLinger, logger: logger))
    }

    /// Keeps the streams this service writes within the configured retention (`events.stream.max.length`,
    /// `events.stream.max.age.hours`), every `events.retention.interval.seconds`, never trimming what a
    /// consumer group has not read.
    public mutating func trimStreams(_ streams: [String]) {
        let retention = StreamRetention(maxLength: configuration.streamMaxLength, maxAge: configuration.streamMaxAge)
        addService(StreamTrimmer(redis: redis, streams: streams, retention: retention, logger: logger).periodic(every: configuration.retentionInterval))
    }

    /// Forgets handled event ids past the configured retention (`events.processed.retention.hours`,
    /// `events.processed.max.rows`), every `events.retention.interval.seconds`.
    public mutating func pruneProcessedEvents(in store: SQLiteStore) {
        let retention = configuration.processedEventsRetention
        let maxRows = configuration.processedEventsMaxRows
        addService(PeriodicWork("processed-events-prune", every: configuration.retentionInterval, logger: logger) {
            try await ProcessedEvents.prune(store: store, retention: retention, maxRows: maxRows)
        })
    }
}
