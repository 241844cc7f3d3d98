import Contracts
import Foundation
import HailKit
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOPosix
import RedisKit
import SQLiteKit
import ServiceLifecycle

/// The transactional outbox: an event row written in the same SQLite transaction as the state change it
/// announces, so an event exists exactly when its change committed. `OutboxRelay` moves the rows to Redis.
public enum Outbox {
    /// Adds the outbox table to a service's migrations.
    public static func addMigrations(to migrations: inout SQLiteMigrations) {
        migrations.add("outbox-v1") { db in
            try db.execute(sql: """
                CREATE TABLE outbox (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    event_id TEXT NOT NULL UNIQUE,
                    stream TEXT NOT NULL,
                    type TEXT NOT NULL,
                    source TEXT NOT NULL,
                    occurred_at REAL NOT NULL,
                    payload BLOB NOT NULL
                )
                """)
        }
        // `seq` as the plain rowid: `AUTOINCREMENT` rewrote `sqlite_sequence` in every commit that
        // enqueued an event. Without it a seq can come again once every row below it is gone (an empty
        // table starts at 1), which the relay allows for: it reads the table anew each time and deletes
        // only the rows it published, and a row enqueued later always has a higher seq than the rows
        // still waiting.
        migrations.add("outbox-v2-rowid") { db in
            try db.dropAutoincrement(from: "outbox")
        }
    }

    /// Records `event` for publishing; call inside the write transaction that makes the change.
    @discardableResult
    public static func enqueue<E: DomainEvent>(
        _ event: E, source: String, type: String? = nil, in db: Database
    ) throws -> EventEnvelope {
        let envelope = try EventEnvelope(event, source: source, type: type)
        try enqueue(envelope, in: db)
        return envelope
    }

    /// Records an envelope for publishing on its `stream` as it is (its id kept, so a follower that saw
    /// it elsewhere deduplicates it); call inside the write transaction that makes the change.
    public static func enqueue(_ envelope: EventEnvelope, in db: Database) throws {
        try db.cachedStatement(
            sql: "INSERT INTO outbox (event_id, stream, type, source, occurred_at, payload) VALUES (?, ?, ?, ?, ?, ?)"
        ).execute(
            arguments: [envelope.id, envelope.stream, envelope.type, envelope.source, envelope.occurredAt, Data(envelope.payload)])
    }

    /// Events not yet published, oldest first.
    public static func pending(in db: Database, limit: Int = 100) throws -> [(seq: Int64, envelope: EventEnvelope)] {
        // Columns read by position: a lookup by name compares names case-insensitively, per row.
        try Row.fetchAll(
            db.cachedStatement(sql: "SELECT seq, event_id, stream, type, source, occurred_at, payload FROM outbox ORDER BY seq LIMIT ?"),
            arguments: [limit]
        ).map { row in
            let payload: Data = row[6]
            return (
                row[0],
                EventEnvelope(id: row[1], type: row[3], stream: row[2], source: row[4], occurredAt: row[5], payload: Array(payload))
            )
        }
    }
}

/// Moves outbox rows to their Redis streams, oldest first, and deletes them once Redis has them.
///
/// Delivery is at least once: a crash between `XADD` and the delete publishes the row again on restart,
/// with the same event id, which consumers deduplicate (`ProcessedEvents`).
public struct OutboxRelay: Service {
    let store: SQLiteStore
    let redis: RedisClient
    let wakeups: OutboxWakeups
    let pollInterval: Duration
    let linger: Duration
    let batchSize: Int
    /// `MAXLEN ~` on each `XADD`: nil (the default) leaves trimming to `StreamTrimmer`, which never drops
    /// what a consumer group has not read.
    let maxStreamLength: Int?
    let logger: Logger

    public init(
        store: SQLiteStore,
        redis: RedisClient,
        wakeups: OutboxWakeups = OutboxWakeups(),
        pollInterval: Duration = .milliseconds(200),
        linger: Duration = .zero,
        batchSize: Int = 200,
        maxStreamLength: Int? = nil,
        logger: Logger
    ) {
        self.store = store
        self.redis = redis
        self.wakeups = wakeups
        self.pollInterval = pollInterval
        self.linger = linger
        self.batchSize = batchSize
        self.maxStreamLength = maxStreamLength
        self.logger = logger
    }

    /// Relays as `PeriodicWork` ("outbox-relay"): at every writer's wake-up (`linger` after it, so that
    /// the commits right behind it go in the same pipeline) or every `pollInterval`, at once again after
    /// a full batch, backing off up to 2 s while Redis fails, and once more at shutdown to publish what
    /// committed before it.
    public func run() async throws {
        let wakeups = self.wakeups
        let linger = self.linger
        try await PeriodicWork(
            "outbox-relay", every: pollInterval, maxBackoff: max(pollInterval, .seconds(2)), finalRun: true,
            wait: { await wakeups.wait(upTo: $0, linger: linger) }, logger: logger
        ) {
            try await relayOnce() == batchSize ? .more : .done
        }.run()
    }

    /// Publishes one batch; returns how many events it moved.
    @discardableResult
    public func relayOnce() async throws -> Int {
        let batch = try await store.read { db in try Outbox.pending(in: db, limit: batchSize) }
        guard !batch.isEmpty else { return 0 }
        let commands = batch.map { item in
            RedisClient.xaddCommand(
                EventEnvelope.streamKey(item.envelope.stream), fields: item.envelope.fields, maxLength: maxStreamLength)
        }
        let replies = try await redis.pipeline(commands)
        var published: [Int64] = []
        for (item, reply) in zip(batch, replies) {
            if case .error(let message) = reply {
                logger.error("event not published", metadata: ["event": "\(item.envelope.id)", "error": "\(message)"])
                break  // keep order: stop at the first failure
            }
            published.append(item.seq)
        }
        if let last = published.last {
            try await store.write { db in
                try db.execute(sql: "DELETE FROM outbox WHERE seq <= ?", arguments: [last])
            }
            Counter(label: "hailstorm_events_published_total").increment(by: published.count)
        }
        return published.count
    }
}

/// Lets a writer wake the relay at once instead of at its next poll.
///
/// The relay parks on a continuation that a `notify` or a timer on an event loop resumes — no polling in
/// between, so an idle service does not wake up hundreds of times a second to look at a flag.
public final class OutboxWakeups: Sendable {
    private struct State {
        var pending = false
        var waiter: (id: UInt64, continuation: CheckedContinuation<Void, Never>)?
        var nextID: UInt64 = 0
        /// A wait whose timer or cancellation came before it parked: it must not park.
        var released: UInt64?
    }
    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Call after committing a transaction that enqueued events.
    public func notify() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }

    /// Returns `linger` after a `notify` (or after one that came since the last wait), after `timeout`,
    /// or when the task is cancelled. One relay waits on a wakeups object; a second waiter releases the first.
    func wait(upTo timeout: Duration, linger: Duration) async {
        await wait(upTo: timeout)
        if linger > .zero { try? await Task.sleep(for: linger) }
    }

    /// Returns at a `notify` (or at once if one came since the last wait), after `timeout`, or when the
    /// task is cancelled.
    func wait(upTo timeout: Duration) async {
        let id: UInt64? = state.withLockedValue { state in
            if state.pending {
                state.pending = false
                return nil
            }
            state.nextID &+= 1
            return state.nextID
        }
        guard let id else { return }
        let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .nanoseconds(max(0, timeout.nanosecondsValue))) {
            self.release(id)
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let (resumeNow, previous) = state.withLockedValue { state -> (Bool, CheckedContinuation<Void, Never>?) in
                    if state.pending || state.released == id {
                        state.pending = false
                        state.released = nil
                        return (true, nil)
                    }
                    let previous = state.waiter?.continuation
                    state.waiter = (id, continuation)
                    return (false, previous)
                }
                previous?.resume()
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            release(id)
        }
    }

    /// Resumes the waiter `id` if it is still parked.
    private func release(_ id: UInt64) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter, waiter.id == id else {
                if state.waiter == nil, state.nextID == id { state.released = id }
                return nil
            }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }
}
