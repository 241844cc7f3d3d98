import Foundation
import SQLiteKit

/// Makes an event handler idempotent: the event id is recorded in the same transaction as the handler's
/// changes, so an event delivered twice (republished by the relay, reclaimed after a crash) changes
/// state once.
public enum ProcessedEvents {
    public static func addMigrations(to migrations: inout SQLiteMigrations) {
        migrations.add("processed-events-v1") { db in
            try db.execute(sql: """
                CREATE TABLE processed_events (
                    consumer TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    processed_at REAL NOT NULL,
                    PRIMARY KEY (consumer, event_id)
                )
                """)
        }
        migrations.add("processed-events-v2-by-time") { db in
            try db.execute(sql: "CREATE INDEX processed_events_at ON processed_events(processed_at)")
        }
    }

    /// Forgets handled events older than `retention`, then the oldest beyond `maxRows`; returns how many
    /// went. Safe as long as no event is redelivered after that long (reclaims happen within minutes, a
    /// republished outbox at the next start).
    @discardableResult
    public static func prune(store: SQLiteStore, retention: Duration, maxRows: Int, now: Date = Date()) async throws -> Int {
        let cutoff = now.timeIntervalSince1970 - Double(retention.components.seconds)
        return try await store.write { db in
            try db.execute(sql: "DELETE FROM processed_events WHERE processed_at < ?", arguments: [cutoff])
            var removed = db.changesCount
            try db.execute(
                sql: """
                    DELETE FROM processed_events WHERE processed_at <= (
                        SELECT processed_at FROM processed_events ORDER BY processed_at DESC LIMIT 1 OFFSET ?)
                    """,
                arguments: [maxRows])
            removed += db.changesCount
            return removed
        }
    }

    /// Runs `body` in one write transaction with the record that `consumer` handled `envelope`.
    /// Returns false, without running `body`, when it already did.
    @discardableResult
    public static func once(
        _ envelope: EventEnvelope,
        consumer: String,
        store: SQLiteStore,
        _ body: @escaping @Sendable (Database) throws -> Void
    ) async throws -> Bool {
        try await store.write { db in
            guard try record(envelope, consumer: consumer, in: db) else { return false }
            try body(db)
            return true
        }
    }

    /// Runs `body` for each of `envelopes` that `consumer` has not handled yet, all in one write
    /// transaction with the records that it did: a batching consumer's read costs one commit. A `body` that
    /// throws rolls the whole batch back.
    public static func each(
        _ envelopes: [EventEnvelope],
        consumer: String,
        store: SQLiteStore,
        _ body: @escaping @Sendable (EventEnvelope, Database) throws -> Void
    ) async throws {
        guard !envelopes.isEmpty else { return }
        try await store.write { db in
            for envelope in envelopes where try record(envelope, consumer: consumer, in: db) {
                try body(envelope, db)
            }
        }
    }

    /// Records, inside the caller's transaction, that `consumer` handled `envelope`; false when it already
    /// had (the caller then leaves the event's changes out). For handlers that apply a batch of events
    /// in one transaction.
    public static func record(_ envelope: EventEnvelope, consumer: String, in db: Database) throws -> Bool {
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?)")
            .execute(arguments: [consumer, envelope.id, Date().timeIntervalSince1970])
        return db.changesCount == 1
    }
}
