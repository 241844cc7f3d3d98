import Contracts
import EventBus
import Foundation
import HailKit
import SQLiteKit

/// Orders, their history and the outbox, in the order service's own SQLite file. Every move of an order
/// is one transaction: the row, a history row and the event announcing it commit together or not at all.
struct OrderStore: Sendable {
    let db: SQLiteStore
    /// The service name events carry as their source.
    let source: String

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-orders") { db in
            try db.execute(sql: """
                CREATE TABLE orders (
                    id TEXT PRIMARY KEY,
                    rider_id TEXT NOT NULL,
                    driver_id TEXT,
                    state TEXT NOT NULL,
                    pickup_lat REAL NOT NULL,
                    pickup_lon REAL NOT NULL,
                    dropoff_lat REAL NOT NULL,
                    dropoff_lon REAL NOT NULL,
                    distance_km REAL NOT NULL,
                    fare_cents INTEGER NOT NULL,
                    surge REAL NOT NULL,
                    currency TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    idempotency_key TEXT,
                    UNIQUE (rider_id, idempotency_key)
                );
                CREATE INDEX orders_rider ON orders(rider_id, created_at DESC, id DESC);
                CREATE INDEX orders_driver ON orders(driver_id, created_at DESC, id DESC);
                CREATE INDEX orders_waiting ON orders(state, created_at);
                CREATE TABLE order_history (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    order_id TEXT NOT NULL REFERENCES orders(id),
                    from_state TEXT,
                    to_state TEXT NOT NULL,
                    at REAL NOT NULL,
                    actor TEXT NOT NULL,
                    reason TEXT
                );
                CREATE INDEX order_history_order ON order_history(order_id, seq);
                CREATE TABLE order_offers (
                    order_id TEXT NOT NULL REFERENCES orders(id),
                    driver_id TEXT NOT NULL,
                    offered_at REAL NOT NULL,
                    PRIMARY KEY (order_id, driver_id)
                );
                """)
        }
        Outbox.addMigrations(to: &migrations)
        migrations.add("v2-order-dispatch") { db in
            try db.execute(sql: "ALTER TABLE orders ADD COLUMN dispatch TEXT")
        }
        // What a move writes, trimmed: the expiry rule's index holds only the orders still waiting (a move
        // of a trip under way no longer moves an entry in it), and the history's sequence is the plain
        // rowid (never deleted, so it still grows; `AUTOINCREMENT` rewrote `sqlite_sequence` at each commit).
        migrations.add("v3-order-lean-writes") { db in
            try db.execute(sql: """
                DROP INDEX orders_waiting;
                CREATE INDEX orders_waiting ON orders(created_at) WHERE state IN ('created', 'offered');
                """)
            try db.dropAutoincrement(from: "order_history")
        }
        return migrations
    }

    /// Stores a new order with its first history row and `order.created`, or returns the order an earlier
    /// request of the same rider with the same key created (and `false`).
    func create(_ order: OrderAPI.Order, idempotencyKey: String?) async throws -> (order: OrderAPI.Order, created: Bool) {
        let source = self.source
        return try await db.write { db in
            if let idempotencyKey,
                let id = try String.fetchOne(
                    db.cachedStatement(sql: "SELECT id FROM orders WHERE rider_id = ? AND idempotency_key = ?"),
                    arguments: [order.riderID, idempotencyKey]),
                let existing = try Self.fetch(id, in: db)
            {
                guard existing.pickup == order.pickup, existing.dropoff == order.dropoff, existing.dispatch == order.dispatch else {
                    throw Problem.idempotencyKeyReused(
                        "This key created order \(existing.id) for another ride; use a new key for a new ride")
                }
                return (existing, false)
            }
            try db.cachedStatement(
                sql: """
                    INSERT INTO orders (id, rider_id, state, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, distance_km,
                        fare_cents, surge, currency, created_at, updated_at, idempotency_key, dispatch)
                    VALUES (?, ?, 'created', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """
            ).execute(
                arguments: [
                    order.id, order.riderID, order.pickup.lat, order.pickup.lon, order.dropoff.lat, order.dropoff.lon,
                    order.distanceKm, order.fareCents, order.surge, order.currency, order.createdAt, order.createdAt,
                    idempotencyKey, order.dispatch?.rawValue,
                ])
            try Self.recordHistory(
                OrderAPI.Transition(from: nil, to: .created, at: order.createdAt, actor: order.riderID), order: order.id, in: db)
            try Outbox.enqueue(
                OrderEvents.Created(
                    orderID: order.id, riderID: order.riderID, pickup: order.pickup, dropoff: order.dropoff,
                    fareCents: order.fareCents, createdAt: order.createdAt, dispatch: order.dispatch, surge: order.surge),
                source: source, in: db)
            return (try Self.fetch(order.id, in: db) ?? order, true)
        }
    }

    func order(id: String) async throws -> OrderAPI.Order? {
        try await db.read { db in try Self.fetch(id, in: db) }
    }

    /// A page of a rider's (or a driver's) orders, newest first, each with its history.
    func orders(of user: String, asDriver: Bool, after cursor: OrderCursor?, limit: Int) async throws -> OrderAPI.OrderPage {
        try await db.read { db in
            let column = asDriver ? "driver_id" : "rider_id"
            var sql = "SELECT \(Self.orderColumns) FROM orders WHERE \(column) = ?"
            var arguments: StatementArguments = [user]
            if let cursor {
                sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
                arguments += [cursor.createdAt, cursor.createdAt, cursor.id]
            }
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            arguments += [limit + 1]
            var rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
            let more = rows.count > limit
            if more { rows.removeLast() }
            let orders = try rows.map { row in try Self.order(row, history: Self.history(row[0], in: db)) }
            let next = more ? orders.last.map(OrderAPI.OrderPage.cursor(after:)) : nil
            return OrderAPI.OrderPage(orders: orders, nextCursor: next)
        }
    }

    /// What a move needs besides its target state.
    struct Move: Sendable {
        var to: OrderState
        var actor: String
        var reason: String? = nil
        /// For an assignment: the driver.
        var driverID: String? = nil
        /// For an offer: the drivers.
        var offeredTo: [String]? = nil
        /// Who may make it, given the order as it is now; throws a 403/404 problem otherwise.
        var authorize: @Sendable (OrderAPI.Order) throws -> Void = { _ in }
    }

    /// Moves an order, enforcing the state machine, in one transaction with its history rows and events.
    /// Repeating a move already made (the same assignment, the same offer) answers the order unchanged,
    /// which makes retries by matching and order-grab safe.
    func move(_ id: String, _ move: Move, now: Double) async throws -> (order: OrderAPI.Order, moved: Bool) {
        let source = self.source
        return try await db.write { db in
            guard let order = try Self.fetch(id, in: db) else { throw Problem.notFound("No order \(id)") }
            try move.authorize(order)
            if move.to == .offered, order.state == .offered {
                return try Self.offerAgain(order, to: move.offeredTo ?? [], actor: move.actor, now: now, source: source, in: db)
            }
            if Self.isRepeat(move, of: order) { return (order, false) }
            var steps: [OrderState] = [move.to]
            // An assignment straight from `created` (assign mode) passes through `offered` to that driver,
            // so the machine's path is kept and both moves are in the history.
            if move.to == .assigned, order.state == .created { steps = [.offered, .assigned] }
            var state = order.state
            for next in steps {
                guard state.canMove(to: next) else {
                    throw Problem.conflict(
                        "illegal-transition",
                        "The order is \(order.state.rawValue); it cannot become \(move.to.rawValue)", field: "state")
                }
                state = next
            }
            var driver = order.driverID
            if move.to == .assigned, let candidate = move.driverID {
                if let busy = try String.fetchOne(
                    db.cachedStatement(
                        sql: "SELECT id FROM orders WHERE driver_id = ? AND state IN ('assigned', 'arriving', 'in_trip') AND id != ?"),
                    arguments: [candidate, id])
                {
                    throw Problem.conflict("driver-busy", "Driver \(candidate) is already on order \(busy)", field: "driverID")
                }
                driver = candidate
            }
            state = order.state
            var moved = order
            var storedDriver = order.driverID
            for next in steps {
                let offeredTo = next == .offered ? (move.offeredTo ?? move.driverID.map { [$0] }) : nil
                let nextDriver = next == .offered ? nil : driver
                if nextDriver == storedDriver {
                    // Only the columns that change: setting `driver_id` to what it was still rewrites its
                    // entry in `orders_driver`, a page of the index per move.
                    try db.cachedStatement(sql: "UPDATE orders SET state = ?, updated_at = ? WHERE id = ?")
                        .execute(arguments: [next.rawValue, now, id])
                } else {
                    try db.cachedStatement(sql: "UPDATE orders SET state = ?, driver_id = ?, updated_at = ? WHERE id = ?")
                        .execute(arguments: [next.rawValue, nextDriver, now, id])
                    storedDriver = nextDriver
                }
                for driverID in offeredTo ?? [] {
                    try db.cachedStatement(sql: "INSERT OR IGNORE INTO order_offers (order_id, driver_id, offered_at) VALUES (?, ?, ?)")
                        .execute(arguments: [id, driverID, now])
                }
                let transition = OrderAPI.Transition(from: state, to: next, at: now, actor: move.actor, reason: move.reason)
                try Self.recordHistory(transition, order: id, in: db)
                moved.history.append(transition)
                try Outbox.enqueue(
                    OrderEvents.Moved(
                        orderID: id, riderID: order.riderID, driverID: next == .offered ? nil : driver, offeredTo: offeredTo,
                        from: state, to: next, at: now, reason: move.reason, fareCents: order.fareCents, actor: move.actor),
                    source: source, type: next.eventType, in: db)
                state = next
                moved.state = next
                moved.driverID = next == .offered ? nil : driver
            }
            // The order as the rows now hold it, without reading them back.
            moved.updatedAt = now
            return (moved, true)
        }
    }

    /// An offer nobody took, made again: the drivers not offered it before are added and told
    /// (`order.offered` to them); the state stays `offered`, so there is no history row. Offering it to the
    /// same drivers again changes nothing.
    private static func offerAgain(
        _ order: OrderAPI.Order, to drivers: [String], actor: String, now: Double, source: String, in db: Database
    ) throws -> (order: OrderAPI.Order, moved: Bool) {
        var fresh: [String] = []
        for driver in drivers {
            try db.cachedStatement(sql: "INSERT OR IGNORE INTO order_offers (order_id, driver_id, offered_at) VALUES (?, ?, ?)")
                .execute(arguments: [order.id, driver, now])
            if db.changesCount == 1 { fresh.append(driver) }
        }
        guard !fresh.isEmpty else { return (order, false) }
        try Outbox.enqueue(
            OrderEvents.Moved(
                orderID: order.id, riderID: order.riderID, driverID: nil, offeredTo: fresh, from: .offered, to: .offered, at: now,
                reason: "offered to \(fresh.count) more drivers", fareCents: order.fareCents, actor: actor),
            source: source, type: OrderState.offered.eventType, in: db)
        try db.cachedStatement(sql: "UPDATE orders SET updated_at = ? WHERE id = ?").execute(arguments: [now, order.id])
        return (try fetch(order.id, in: db) ?? order, true)
    }

    /// Orders still waiting for a driver after `cutoff`: the expiry rule's candidates.
    func waiting(createdBefore cutoff: Double, limit: Int) async throws -> [String] {
        try await db.read { db in
            try String.fetchAll(
                db,
                sql: "SELECT id FROM orders WHERE state IN ('created', 'offered') AND created_at < ? ORDER BY created_at LIMIT ?",
                arguments: [cutoff, limit])
        }
    }

    /// Whether `driver` was offered `order` (an offered driver may look at it before grabbing).
    func wasOffered(_ order: String, to driver: String) async throws -> Bool {
        try await db.read { db in
            try Bool.fetchOne(
                db.cachedStatement(sql: "SELECT 1 FROM order_offers WHERE order_id = ? AND driver_id = ?"), arguments: [order, driver])
                ?? false
        }
    }

    private static func isRepeat(_ move: Move, of order: OrderAPI.Order) -> Bool {
        guard order.state == move.to else { return false }
        switch move.to {
        case .assigned: return order.driverID == move.driverID
        case .offered, .paid: return true
        default: return false
        }
    }

    // MARK: Rows

    static func recordHistory(_ transition: OrderAPI.Transition, order: String, in db: Database) throws {
        try db.cachedStatement(
            sql: "INSERT INTO order_history (order_id, from_state, to_state, at, actor, reason) VALUES (?, ?, ?, ?, ?, ?)"
        ).execute(arguments: [order, transition.from?.rawValue, transition.to.rawValue, transition.at, transition.actor, transition.reason])
    }

    static func fetch(_ id: String, in db: Database) throws -> OrderAPI.Order? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT \(orderColumns) FROM orders WHERE id = ?"), arguments: [id])
        else { return nil }
        return try order(row, history: history(id, in: db))
    }

    static func history(_ id: String, in db: Database) throws -> [OrderAPI.Transition] {
        try Row.fetchAll(
            db.cachedStatement(sql: "SELECT from_state, to_state, at, actor, reason FROM order_history WHERE order_id = ? ORDER BY seq"),
            arguments: [id]
        ).map { row in
            OrderAPI.Transition(
                from: (row[0] as String?).flatMap(OrderState.init(rawValue:)),
                to: OrderState(rawValue: row[1]) ?? .created, at: row[2], actor: row[3], reason: row[4])
        }
    }

    /// The columns `order(_:history:)` reads, in the order it reads them by position (a lookup by name
    /// compares names case-insensitively, per row).
    static let orderColumns = """
        id, rider_id, driver_id, state, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, distance_km, fare_cents, surge, \
        currency, created_at, updated_at, dispatch
        """

    static func order(_ row: Row, history: [OrderAPI.Transition]) throws -> OrderAPI.Order {
        OrderAPI.Order(
            id: row[0], riderID: row[1], driverID: row[2],
            state: OrderState(rawValue: row[3]) ?? .created,
            pickup: GeoPoint(lat: row[4], lon: row[5]),
            dropoff: GeoPoint(lat: row[6], lon: row[7]),
            distanceKm: row[8], fareCents: row[9], surge: row[10], currency: row[11],
            createdAt: row[12], updatedAt: row[13], history: history,
            dispatch: (row[14] as String?).flatMap(OrderAPI.Dispatch.init(rawValue:)))
    }
}

/// Where a page of orders ends: the last order's creation time and id (opaque to clients; written by
/// `OrderAPI.OrderPage.cursor(after:)`, which the gateway uses too when it merges the pages of shards).
struct OrderCursor: Sendable, Hashable {
    var createdAt: Double
    var id: String

    /// Parses a cursor this service handed out; a 400 problem for anything else.
    init(parsing text: String) throws {
        let parts = text.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, let bits = UInt64(parts[0]), !parts[1].isEmpty else {
            throw Problem.invalidField("cursor", "is not a cursor this service handed out")
        }
        self.createdAt = Double(bitPattern: bits)
        self.id = String(parts[1])
    }
}
