import Contracts
import Foundation
import HailKit
import Logging
import SQLiteKit

/// The command centre's own SQLite file: the audit log of operator actions and the alerts book.
struct CommandStore: Sendable {
    let db: SQLiteStore

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-command") { db in
            try db.execute(sql: """
                CREATE TABLE audit (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at REAL NOT NULL,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    target TEXT NOT NULL,
                    before TEXT NOT NULL,
                    after TEXT NOT NULL,
                    request_id TEXT NOT NULL,
                    idempotency_key TEXT UNIQUE
                );
                CREATE TABLE alerts (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    fingerprint TEXT NOT NULL,
                    name TEXT NOT NULL,
                    source TEXT NOT NULL,
                    severity TEXT NOT NULL,
                    summary TEXT NOT NULL,
                    labels TEXT NOT NULL,
                    fired_at REAL NOT NULL,
                    resolved_at REAL,
                    acknowledged_at REAL,
                    acknowledged_by TEXT
                );
                CREATE UNIQUE INDEX alerts_firing ON alerts(fingerprint) WHERE resolved_at IS NULL;
                CREATE INDEX alerts_fired ON alerts(fired_at);
                """)
        }
        return migrations
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    private static func text(_ fields: [String: String]) throws -> String {
        String(decoding: try encoder.encode(fields), as: UTF8.self)
    }

    private static func fields(_ text: String) -> [String: String] {
        (try? JSONDecoder().decode([String: String].self, from: Data(text.utf8))) ?? [:]
    }

    // MARK: Audit

    /// The entry an earlier request with `idempotencyKey` wrote, if any: a retried lever answers it again
    /// instead of acting twice.
    func entry(idempotencyKey: String) async throws -> CommandAPI.AuditEntry? {
        try await db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM audit WHERE idempotency_key = ?", arguments: [idempotencyKey]).map(Self.entry)
        }
    }

    /// Writes one operator action; with an `idempotencyKey` already written, answers that entry instead.
    func record(
        actor: String, action: String, target: String, before: [String: String], after: [String: String], requestID: String,
        idempotencyKey: String?, at: Double = Date().timeIntervalSince1970
    ) async throws -> CommandAPI.AuditEntry {
        let beforeText = try Self.text(before), afterText = try Self.text(after)
        return try await db.write { db in
            if let idempotencyKey,
                let row = try Row.fetchOne(db, sql: "SELECT * FROM audit WHERE idempotency_key = ?", arguments: [idempotencyKey])
            {
                return Self.entry(row)
            }
            try db.execute(
                sql: """
                    INSERT INTO audit (at, actor, action, target, before, after, request_id, idempotency_key)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [at, actor, action, target, beforeText, afterText, requestID, idempotencyKey])
            return CommandAPI.AuditEntry(
                id: Int(db.lastInsertedRowID), at: at, actor: actor, action: action, target: target, before: before, after: after,
                requestID: requestID)
        }
    }

    /// The newest `limit` entries, newest first.
    func audit(limit: Int) async throws -> [CommandAPI.AuditEntry] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM audit ORDER BY id DESC LIMIT ?", arguments: [limit]).map(Self.entry)
        }
    }

    private static func entry(_ row: Row) -> CommandAPI.AuditEntry {
        CommandAPI.AuditEntry(
            id: row["id"], at: row["at"], actor: row["actor"], action: row["action"], target: row["target"],
            before: fields(row["before"]), after: fields(row["after"]), requestID: row["request_id"])
    }

    // MARK: Alerts

    /// An alert as a rule reports it now.
    struct Observed: Sendable {
        var fingerprint: String
        var name: String
        var source: String
        var severity: String
        var summary: String
        var labels: [String: String]
    }

    /// What one reading of the rules changed: the alerts that began firing and those that stopped.
    struct Transitions: Sendable, Equatable {
        var fired: [String] = []
        var resolved: [String] = []

        /// A line per alert that fired or resolved.
        func log(source: String, to logger: Logger) {
            for name in fired { logger.warning("alert firing", metadata: ["alert": "\(name)", "source": "\(source)"]) }
            for name in resolved { logger.notice("alert resolved", metadata: ["alert": "\(name)", "source": "\(source)"]) }
        }
    }

    /// Brings the book in line with the alerts of `source` firing now: a new one is opened at `now`, one
    /// no longer firing is resolved at `now`. Alerts of other sources (or, with `names`, of other rules)
    /// are left alone.
    func observe(_ firing: [Observed], source: String, names: [String]? = nil, now: Double) async throws -> Transitions {
        let rows = try firing.map { ($0, try Self.text($0.labels)) }
        return try await db.write { db in
            var transitions = Transitions()
            let open = try Row.fetchAll(
                db, sql: "SELECT id, fingerprint, name FROM alerts WHERE resolved_at IS NULL AND source = ?", arguments: [source]
            ).filter { row in names.map { $0.contains(row["name"] as String) } ?? true }
            let firingNow = Set(firing.map(\.fingerprint))
            for row in open where !firingNow.contains(row["fingerprint"] as String) {
                try db.execute(sql: "UPDATE alerts SET resolved_at = ? WHERE id = ?", arguments: [now, row["id"] as Int64])
                transitions.resolved.append(row["name"])
            }
            let openFingerprints = Set(open.map { $0["fingerprint"] as String })
            for (alert, labels) in rows where !openFingerprints.contains(alert.fingerprint) {
                try db.execute(
                    sql: """
                        INSERT INTO alerts (fingerprint, name, source, severity, summary, labels, fired_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [alert.fingerprint, alert.name, source, alert.severity, alert.summary, labels, now])
                transitions.fired.append(alert.name)
            }
            return transitions
        }
    }

    /// `firing`, `resolved` or nil for both: firing first, then the newest, at most `limit`.
    func alerts(state: String?, limit: Int) async throws -> [CommandAPI.Alert] {
        let condition =
            switch state {
            case "firing": "WHERE resolved_at IS NULL"
            case "resolved": "WHERE resolved_at IS NOT NULL"
            default: ""
            }
        return try await db.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM alerts \(condition) ORDER BY resolved_at IS NOT NULL, fired_at DESC, id DESC LIMIT ?",
                arguments: [limit]
            ).map(Self.alert)
        }
    }

    /// Marks the alert acknowledged by `actor` (a second acknowledgement keeps the first's time and
    /// name); nil when there is no such alert. Answers the alert before and after.
    func acknowledge(id: Int64, actor: String, now: Double) async throws -> (before: CommandAPI.Alert, after: CommandAPI.Alert)? {
        try await db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM alerts WHERE id = ?", arguments: [id]) else { return nil }
            let before = Self.alert(row)
            guard before.acknowledgedAt == nil else { return (before, before) }
            try db.execute(
                sql: "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ? WHERE id = ?", arguments: [now, actor, id])
            var after = before
            after.acknowledgedAt = now
            after.acknowledgedBy = actor
            return (before, after)
        }
    }

    private static func alert(_ row: Row) -> CommandAPI.Alert {
        let resolvedAt: Double? = row["resolved_at"]
        return CommandAPI.Alert(
            id: String(row["id"] as Int64), name: row["name"], source: row["source"], severity: row["severity"], summary: row["summary"],
            labels: fields(row["labels"]), state: resolvedAt == nil ? "firing" : "resolved", firedAt: row["fired_at"],
            resolvedAt: resolvedAt, acknowledgedAt: row["acknowledged_at"], acknowledgedBy: row["acknowledged_by"])
    }
}
