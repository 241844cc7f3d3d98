import Contracts
import EventBus
import Foundation
import SQLiteKit

/// Matching's own SQLite file: the orders waiting for dispatch (kept from `order.created`, so a restart
/// loses none) and the dispatch log.
struct DispatchStore: Sendable {
    let db: SQLiteStore

    struct Waiting: Sendable, Hashable {
        var orderID: String
        var pickup: GeoPoint
        var createdAt: Double
        /// The rider's choice; nil: the service's configured style.
        var dispatch: OrderAPI.Dispatch?
    }

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-dispatch") { db in
            try db.execute(sql: """
                CREATE TABLE pending_orders (
                    order_id TEXT PRIMARY KEY,
                    pickup_lat REAL NOT NULL,
                    pickup_lon REAL NOT NULL,
                    created_at REAL NOT NULL,
                    state TEXT NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'offered')),
                    offered_at REAL
                );
                CREATE INDEX pending_state ON pending_orders(state, created_at);
                CREATE TABLE dispatch_log (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    order_id TEXT NOT NULL,
                    mode TEXT NOT NULL,
                    drivers TEXT NOT NULL,
                    pickup_km REAL,
                    at REAL NOT NULL
                );
                CREATE INDEX dispatch_log_order ON dispatch_log(order_id);
                """)
        }
        ProcessedEvents.addMigrations(to: &migrations)
        migrations.add("v2-pending-dispatch") { db in
            try db.execute(sql: "ALTER TABLE pending_orders ADD COLUMN dispatch TEXT")
        }
        return migrations
    }

    func add(_ created: OrderEvents.Created, in db: Database) throws {
        try db.execute(
            sql: "INSERT OR IGNORE INTO pending_orders (order_id, pickup_lat, pickup_lon, created_at, dispatch) VALUES (?, ?, ?, ?, ?)",
            arguments: [created.orderID, created.pickup.lat, created.pickup.lon, created.createdAt, created.dispatch?.rawValue])
    }

    /// Orders to dispatch in this window, oldest first: those waiting, and those offered before
    /// `offerLapsedBefore` that nobody took (they are offered again, to whoever is nearest now).
    func waiting(limit: Int, offerLapsedBefore: Double) async throws -> [Waiting] {
        try await db.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM pending_orders WHERE state = 'waiting' OR (state = 'offered' AND offered_at < ?)
                    ORDER BY created_at LIMIT ?
                    """,
                arguments: [offerLapsedBefore, limit]
            ).map {
                Waiting(
                    orderID: $0["order_id"], pickup: GeoPoint(lat: $0["pickup_lat"], lon: $0["pickup_lon"]), createdAt: $0["created_at"],
                    dispatch: ($0["dispatch"] as String?).flatMap(OrderAPI.Dispatch.init(rawValue:)))
            }
        }
    }

    var waitingCount: Int {
        get async throws {
            try await db.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pending_orders") ?? 0 }
        }
    }

    /// The order left dispatch: assigned (logged), or ended elsewhere (cancelled, expired, taken by a grab).
    func done(_ order: String, mode: String? = nil, drivers: [String] = [], pickupKm: Double? = nil) async throws {
        try await db.write { db in
            try db.execute(sql: "DELETE FROM pending_orders WHERE order_id = ?", arguments: [order])
            if let mode {
                try db.execute(
                    sql: "INSERT INTO dispatch_log (order_id, mode, drivers, pickup_km, at) VALUES (?, ?, ?, ?, ?)",
                    arguments: [order, mode, drivers.joined(separator: ","), pickupKm, Date().timeIntervalSince1970])
            }
        }
    }

    /// Offered to drivers: it waits for a grab (or its expiry) instead of another window.
    func offered(_ order: String, drivers: [String]) async throws {
        try await db.write { db in
            let now = Date().timeIntervalSince1970
            try db.execute(
                sql: "UPDATE pending_orders SET state = 'offered', offered_at = ? WHERE order_id = ?", arguments: [now, order])
            try db.execute(
                sql: "INSERT INTO dispatch_log (order_id, mode, drivers, at) VALUES (?, 'offer', ?, ?)",
                arguments: [order, drivers.joined(separator: ","), now])
        }
    }
}
