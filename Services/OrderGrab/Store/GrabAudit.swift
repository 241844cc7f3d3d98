import Contracts
import Foundation
import SQLiteKit

/// Every grab attempt and its outcome, in order-grab's own SQLite file: who tried, who won, why the
/// others lost.
struct GrabAudit: Sendable {
    let db: SQLiteStore

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-grabs") { db in
            try db.execute(sql: """
                CREATE TABLE grabs (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    order_id TEXT NOT NULL,
                    driver_id TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    at REAL NOT NULL
                );
                CREATE INDEX grabs_order ON grabs(order_id, seq);
                """)
        }
        // The sequence as the plain rowid (grabs are never deleted, so it still grows), so a grab no longer
        // rewrites `sqlite_sequence`.
        migrations.add("v2-grabs-rowid") { db in
            try db.dropAutoincrement(from: "grabs")
        }
        return migrations
    }

    func record(order: String, driver: String, outcome: String, at: Double) async throws {
        try await db.write { db in
            try db.cachedStatement(sql: "INSERT INTO grabs (order_id, driver_id, outcome, at) VALUES (?, ?, ?, ?)")
                .execute(arguments: [order, driver, outcome, at])
        }
    }

    func attempts(order: String) async throws -> [GrabAPI.Attempt] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM grabs WHERE order_id = ? ORDER BY seq", arguments: [order]).map {
                GrabAPI.Attempt(driverID: $0["driver_id"], outcome: $0["outcome"], at: $0["at"])
            }
        }
    }
}
