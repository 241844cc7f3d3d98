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
        // Orders that left dispatch (assigned, or ended), kept for `retention` so that their events
        // delivered late or out of order cannot put them back: an `order.created` redelivered after the
        // order was assigned, an `order.assigned` after the trip ended.
        migrations.add("v3-left-dispatch") { db in
            try db.execute(sql: """
                CREATE TABLE left_dispatch (
                    order_id TEXT PRIMARY KEY,
                    ended INTEGER NOT NULL DEFAULT 0,
                    at REAL NOT NULL
                );
                CREATE INDEX left_dispatch_at ON left_dispatch(at);
                """)
        }
        // Who each standing offer went to, so an offer whose drivers have all taken other trips goes back
        // to dispatch at once instead of waiting for it to lapse.
        migrations.add("v4-offers") { db in
            try db.execute(sql: """
                CREATE TABLE offers (
                    order_id TEXT NOT NULL,
                    driver_id TEXT NOT NULL,
                    PRIMARY KEY (order_id, driver_id)
                ) WITHOUT ROWID;
                CREATE INDEX offers_driver ON offers(driver_id);
                """)
        }
        // Every driver an order was ever offered to, while it is in dispatch: an order offered again (its
        // offer lapsed, or its winner could not take it) goes to drivers not offered it before; those
        // were told it was taken, or let it pass, and the order service tells no driver twice.
        migrations.add("v5-past-offers") { db in
            try db.execute(sql: """
                CREATE TABLE past_offers (
                    order_id TEXT NOT NULL,
                    driver_id TEXT NOT NULL,
                    PRIMARY KEY (order_id, driver_id)
                ) WITHOUT ROWID;
                INSERT OR IGNORE INTO past_offers (order_id, driver_id) SELECT order_id, driver_id FROM offers;
                """)
        }
        // The log's sequence as the plain rowid (never deleted, so it still grows), so a dispatch no longer
        // rewrites `sqlite_sequence`.
        migrations.add("v6-dispatch-log-rowid") { db in
            try db.dropAutoincrement(from: "dispatch_log")
        }
        return migrations
    }

    /// Keeps a new order for dispatch, unless it already left (its `order.created` came late).
    func add(_ created: OrderEvents.Created, in db: Database) throws {
        try db.cachedStatement(
            sql: """
                INSERT OR IGNORE INTO pending_orders (order_id, pickup_lat, pickup_lon, created_at, dispatch)
                SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM left_dispatch WHERE order_id = ?)
                """
        ).execute(
            arguments: [
                created.orderID, created.pickup.lat, created.pickup.lon, created.createdAt, created.dispatch?.rawValue,
                created.orderID,
            ])
    }

    /// The trip is over (completed, cancelled, expired): it leaves dispatch for good.
    func ended(_ order: String, in db: Database) throws {
        try db.cachedStatement(sql: "DELETE FROM pending_orders WHERE order_id = ?").execute(arguments: [order])
        try db.cachedStatement(sql: "DELETE FROM offers WHERE order_id = ?").execute(arguments: [order])
        try db.cachedStatement(sql: "DELETE FROM past_offers WHERE order_id = ?").execute(arguments: [order])
        try db.cachedStatement(
            sql: "INSERT INTO left_dispatch (order_id, ended, at) VALUES (?, 1, ?) ON CONFLICT(order_id) DO UPDATE SET ended = 1"
        ).execute(arguments: [order, Date().timeIntervalSince1970])
    }

    /// Whether the order's trip is known to be over.
    func hasEnded(_ order: String) async throws -> Bool {
        try await db.read { db in try hasEnded(order, in: db) }
    }

    func hasEnded(_ order: String, in db: Database) throws -> Bool {
        try Bool.fetchOne(db.cachedStatement(sql: "SELECT ended FROM left_dispatch WHERE order_id = ?"), arguments: [order]) ?? false
    }

    /// Forgets orders that left dispatch more than `age` seconds ago; returns how many.
    @discardableResult
    func pruneLeft(olderThan age: Double) async throws -> Int {
        try await db.write { db in
            try db.execute(sql: "DELETE FROM left_dispatch WHERE at < ?", arguments: [Date().timeIntervalSince1970 - age])
            return db.changesCount
        }
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
            try done(order, in: db)
            if let mode {
                try db.execute(
                    sql: "INSERT INTO dispatch_log (order_id, mode, drivers, pickup_km, at) VALUES (?, ?, ?, ?, ?)",
                    arguments: [order, mode, drivers.joined(separator: ","), pickupKm, Date().timeIntervalSince1970])
            }
        }
    }

    func done(_ order: String, in db: Database) throws {
        try db.cachedStatement(sql: "DELETE FROM pending_orders WHERE order_id = ?").execute(arguments: [order])
        try db.cachedStatement(sql: "DELETE FROM offers WHERE order_id = ?").execute(arguments: [order])
        try db.cachedStatement(sql: "DELETE FROM past_offers WHERE order_id = ?").execute(arguments: [order])
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO left_dispatch (order_id, ended, at) VALUES (?, 0, ?)")
            .execute(arguments: [order, Date().timeIntervalSince1970])
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
            for driver in drivers {
                try db.cachedStatement(sql: "INSERT OR IGNORE INTO offers (order_id, driver_id) VALUES (?, ?)")
                    .execute(arguments: [order, driver])
                try db.cachedStatement(sql: "INSERT OR IGNORE INTO past_offers (order_id, driver_id) VALUES (?, ?)")
                    .execute(arguments: [order, driver])
            }
        }
    }

    /// The drivers each of `orders` was offered to before (none for an order never offered).
    func offeredBefore(_ orders: [String]) async throws -> [String: Set<String>] {
        guard !orders.isEmpty else { return [:] }
        return try await db.read { db in
            var before: [String: Set<String>] = [:]
            let statement = try db.cachedStatement(sql: "SELECT driver_id FROM past_offers WHERE order_id = ?")
            for order in orders {
                let drivers = try String.fetchAll(statement, arguments: [order])
                if !drivers.isEmpty { before[order] = Set(drivers) }
            }
            return before
        }
    }

    /// Every offer standing to `driver`, withdrawn (as `withdrawOffers(to:in:)` does); returns their orders.
    func withdrawAllOffers(to driver: String) async throws -> [String] {
        try await db.write { db in try withdrawOffers(to: driver, in: db).withdrawn }
    }

    /// Orders waiting for dispatch, the oldest first, and how many in all.
    func waitingOrders(limit: Int) async throws -> MatchingAPI.WaitingOrders {
        try await db.read { db in
            let orders = try Row.fetchAll(
                db, sql: "SELECT order_id, pickup_lat, pickup_lon, created_at, state FROM pending_orders ORDER BY created_at LIMIT ?",
                arguments: [limit]
            ).map {
                MatchingAPI.WaitingOrder(
                    orderID: $0["order_id"], pickup: GeoPoint(lat: $0["pickup_lat"], lon: $0["pickup_lon"]), createdAt: $0["created_at"],
                    state: $0["state"])
            }
            return MatchingAPI.WaitingOrders(orders: orders, total: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pending_orders") ?? 0)
        }
    }

    /// An offered order back to waiting, its offers dropped, for the next window to offer again (see
    /// `MatchingAPI.redispatch`). Returns whether it was offered.
    func redispatch(_ order: String) async throws -> Bool {
        try await db.write { db in
            try db.cachedStatement(sql: "DELETE FROM offers WHERE order_id = ?").execute(arguments: [order])
            try db.cachedStatement(
                sql: "UPDATE pending_orders SET state = 'waiting', offered_at = NULL WHERE order_id = ? AND state = 'offered'"
            ).execute(arguments: [order])
            return db.changesCount > 0
        }
    }

    /// `driver` took a trip: the offers standing to them are withdrawn, and an offered order none of
    /// whose drivers is left goes back to waiting, for the next window to offer it to whoever is free
    /// (rather than lapsing after the offer's time with nobody able to grab it).
    /// Returns the orders whose offers to `driver` were withdrawn, and those of them that went back to waiting.
    func withdrawOffers(to driver: String, in db: Database) throws -> (withdrawn: [String], reopened: [String]) {
        let orders = try String.fetchAll(
            db.cachedStatement(sql: "SELECT order_id FROM offers WHERE driver_id = ?"), arguments: [driver])
        guard !orders.isEmpty else { return ([], []) }
        try db.cachedStatement(sql: "DELETE FROM offers WHERE driver_id = ?").execute(arguments: [driver])
        var reopened: [String] = []
        for order in orders {
            try db.cachedStatement(
                sql: """
                    UPDATE pending_orders SET state = 'waiting', offered_at = NULL
                    WHERE order_id = ? AND state = 'offered' AND NOT EXISTS (SELECT 1 FROM offers WHERE order_id = ?)
                    """
            ).execute(arguments: [order, order])
            if db.changesCount > 0 { reopened.append(order) }
        }
        return (orders, reopened)
    }
}
