import Contracts
import EventBus
import Foundation
import HailKit
import SQLiteKit

/// What analytics keeps, in its own SQLite file: the raw facts it needs (orders and the states they
/// reached, payments, fixes, who was seen where each minute) and per-minute rollups by city and cell
/// (`counts`, `histograms`), updated in the same transaction as the facts.
///
/// Every rollup is a sum of facts that depend only on their own stream read in order (an order's moves
/// follow its creation on the `order` stream), or, for a payment, on its order, whichever of the two
/// arrives second adding it; so reading the streams again from the start gives the same numbers
/// (`rebuild`).
struct AnalyticsStore: Sendable {
    let db: SQLiteStore
    let grids: CityGrids

    /// Rollup names in `counts`.
    enum Metric: String, CaseIterable {
        case quotes, orders, offered, assigned, arriving
        case inTrip = "in_trip"
        case completed, paid, expired, cancelled
        case cancelledByRider = "cancelled_by_rider"
        case cancelledByDriver = "cancelled_by_driver"
        case cancelledByPlatform = "cancelled_by_platform"
        case surgeOrders = "surge_orders"
        case gmv, subsidy, commission
        /// In-trip starts at their pickup cell; completions at their drop-off cell.
        case pickups, dropoffs
        /// Driver-minutes seen available in a cell (for the heatmap: a driver crossing cells within a
        /// minute counts in each).
        case supply
        /// Driver-minutes seen available in the city (each driver once a minute).
        case supplyCity = "supply_city"
        case couponClaims = "coupon_claims"
        case adImpressions = "ad_impressions"
        case adClicks = "ad_clicks"
        case adSpend = "ad_spend_millicents"

        static func cancelledIn(_ state: String) -> String { "cancelled_in_\(state)" }
    }

    /// Durations kept as histograms.
    enum Span: String, CaseIterable {
        case timeToAssign = "time_to_assign"
        case pickupTime = "pickup_time"
        case tripTime = "trip_time"
    }

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-analytics") { db in
            try db.execute(sql: """
                CREATE TABLE orders (
                    id TEXT PRIMARY KEY,
                    rider_id TEXT NOT NULL,
                    driver_id TEXT,
                    state TEXT NOT NULL,
                    city TEXT NOT NULL,
                    cell TEXT,
                    dropoff_city TEXT NOT NULL,
                    dropoff_cell TEXT,
                    pickup_lat REAL NOT NULL, pickup_lon REAL NOT NULL,
                    dropoff_lat REAL NOT NULL, dropoff_lon REAL NOT NULL,
                    fare_cents INTEGER NOT NULL,
                    surge REAL,
                    created_at REAL NOT NULL
                );
                CREATE INDEX orders_created ON orders(created_at);
                CREATE TABLE order_states (
                    order_id TEXT NOT NULL,
                    state TEXT NOT NULL,
                    at REAL NOT NULL,
                    PRIMARY KEY (order_id, state)
                ) WITHOUT ROWID;
                CREATE INDEX order_states_completed ON order_states(state, at);
                CREATE TABLE payments (
                    order_id TEXT PRIMARY KEY,
                    at REAL NOT NULL,
                    fare_cents INTEGER NOT NULL,
                    discount_cents INTEGER NOT NULL,
                    commission_cents INTEGER NOT NULL,
                    counted INTEGER NOT NULL
                );
                CREATE TABLE fixes (
                    driver_id TEXT NOT NULL,
                    at REAL NOT NULL,
                    lat REAL NOT NULL,
                    lon REAL NOT NULL,
                    PRIMARY KEY (driver_id, at)
                ) WITHOUT ROWID;
                CREATE TABLE seen (
                    kind TEXT NOT NULL,
                    minute INTEGER NOT NULL,
                    city TEXT NOT NULL,
                    cell TEXT NOT NULL,
                    id TEXT NOT NULL,
                    PRIMARY KEY (kind, minute, city, cell, id)
                ) WITHOUT ROWID;
                CREATE TABLE counts (
                    metric TEXT NOT NULL,
                    minute INTEGER NOT NULL,
                    city TEXT NOT NULL,
                    cell TEXT NOT NULL,
                    value INTEGER NOT NULL,
                    PRIMARY KEY (metric, minute, city, cell)
                ) WITHOUT ROWID;
                CREATE TABLE histograms (
                    span TEXT NOT NULL,
                    minute INTEGER NOT NULL,
                    city TEXT NOT NULL,
                    cell TEXT NOT NULL,
                    bucket INTEGER NOT NULL,
                    count INTEGER NOT NULL,
                    PRIMARY KEY (span, minute, city, cell, bucket)
                ) WITHOUT ROWID;
                CREATE TABLE trip_paths (
                    order_id TEXT PRIMARY KEY,
                    completed_at REAL NOT NULL,
                    flagged INTEGER NOT NULL,
                    analysis TEXT NOT NULL
                );
                CREATE INDEX trip_paths_flagged ON trip_paths(flagged, completed_at);
                """)
        }
        ProcessedEvents.addMigrations(to: &migrations)
        migrations.add("v2-rebuild-marker") { db in
            // A row while a rebuild is under way: one that was interrupted (the process stopped) is run
            // again at the next start, before anything is read from the streams.
            try db.execute(sql: "CREATE TABLE rebuilding (started_at REAL NOT NULL)")
        }
        return migrations
    }

    /// The tables `rebuild` empties: everything but the migrations.
    static let derivedTables = ["orders", "order_states", "payments", "fixes", "seen", "counts", "histograms", "trip_paths", "processed_events"]

    static func minute(_ at: Double) -> Int { Int((at / 60).rounded(.down)) }

    // MARK: Ingest (each inside the caller's transaction)

    static func add(_ metric: String, _ value: Int, at: Double, city: String, cell: String?, in db: Database) throws {
        guard value != 0 else { return }
        try db.cachedStatement(sql: """
            INSERT INTO counts (metric, minute, city, cell, value) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (metric, minute, city, cell) DO UPDATE SET value = value + excluded.value
            """).execute(arguments: [metric, minute(at), city, cell ?? "", value])
    }

    static func add(_ metric: Metric, _ value: Int = 1, at: Double, city: String, cell: String?, in db: Database) throws {
        try add(metric.rawValue, value, at: at, city: city, cell: cell, in: db)
    }

    static func add(_ span: Span, seconds: Double, at: Double, city: String, cell: String?, in db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT INTO histograms (span, minute, city, cell, bucket, count) VALUES (?, ?, ?, ?, ?, 1)
            ON CONFLICT (span, minute, city, cell, bucket) DO UPDATE SET count = count + 1
            """).execute(arguments: [span.rawValue, minute(at), city, cell ?? "", DurationBuckets.bucket(seconds)])
    }

    /// Records that `id` was seen as `kind` in a minute and place; true the first time.
    @discardableResult
    static func see(_ kind: String, _ id: String, at: Double, city: String, cell: String?, in db: Database) throws -> Bool {
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO seen (kind, minute, city, cell, id) VALUES (?, ?, ?, ?, ?)")
            .execute(arguments: [kind, minute(at), city, cell ?? "", id])
        return db.changesCount == 1
    }

    /// A rider or driver active in a minute: once in the cell, and once in the city (`<kind>-city`, no
    /// cell), so that a city's distinct count reads one row per person and minute however far they moved.
    static func seeActive(_ kind: String, _ id: String, at: Double, city: String, cell: String?, in db: Database) throws {
        try see(kind, id, at: at, city: city, cell: cell, in: db)
        try see("\(kind)-city", id, at: at, city: city, cell: nil, in: db)
    }

    func orderCreated(_ order: OrderEvents.Created, in db: Database) throws {
        let pickup = grids.place(order.pickup), dropoff = grids.place(order.dropoff)
        try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO orders (id, rider_id, state, city, cell, dropoff_city, dropoff_cell, pickup_lat, pickup_lon,
                dropoff_lat, dropoff_lon, fare_cents, surge, created_at)
            VALUES (?, ?, 'created', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                order.orderID, order.riderID, pickup.city, pickup.cell, dropoff.city, dropoff.cell, order.pickup.lat, order.pickup.lon,
                order.dropoff.lat, order.dropoff.lon, order.fareCents, order.surge, order.createdAt,
            ])
        guard db.changesCount == 1 else { return }
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO order_states (order_id, state, at) VALUES (?, 'created', ?)")
            .execute(arguments: [order.orderID, order.createdAt])
        try Self.add(.orders, at: order.createdAt, city: pickup.city, cell: pickup.cell, in: db)
        if (order.surge ?? 1) > 1 { try Self.add(.surgeOrders, at: order.createdAt, city: pickup.city, cell: pickup.cell, in: db) }
        try Self.seeActive("rider", order.riderID, at: order.createdAt, city: pickup.city, cell: pickup.cell, in: db)
        // A payment that arrived before its order is counted now, at the payment's time.
        if let payment = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT * FROM payments WHERE order_id = ? AND counted = 0"), arguments: [order.orderID])
        {
            try countPayment(payment, city: pickup.city, cell: pickup.cell, in: db)
        }
    }

    func orderMoved(_ move: OrderEvents.Moved, in db: Database) throws {
        let to = move.to.rawValue
        guard let order = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT rider_id, driver_id, city, cell, dropoff_city, dropoff_cell, created_at FROM orders WHERE id = ?"),
            arguments: [move.orderID])
        else { return }  // its creation was never seen (the stream was trimmed before analytics read it)
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO order_states (order_id, state, at) VALUES (?, ?, ?)")
            .execute(arguments: [move.orderID, to, move.at])
        guard db.changesCount == 1 else { return }  // offered again, or a repeat
        let city: String = order["city"], cell: String? = order["cell"]
        func stateTime(_ state: String) throws -> Double? {
            try Double.fetchOne(
                db.cachedStatement(sql: "SELECT at FROM order_states WHERE order_id = ? AND state = ?"), arguments: [move.orderID, state])
        }
        try db.cachedStatement(sql: "UPDATE orders SET state = ?, driver_id = coalesce(?, driver_id) WHERE id = ?")
            .execute(arguments: [to, move.driverID, move.orderID])
        switch move.to {
        case .offered:
            try Self.add(.offered, at: move.at, city: city, cell: cell, in: db)
        case .assigned:
            try Self.add(.assigned, at: move.at, city: city, cell: cell, in: db)
            try Self.add(.timeToAssign, seconds: move.at - order["created_at"], at: move.at, city: city, cell: cell, in: db)
        case .arriving:
            try Self.add(.arriving, at: move.at, city: city, cell: cell, in: db)
            if let assigned = try stateTime("assigned") {
                try Self.add(.pickupTime, seconds: move.at - assigned, at: move.at, city: city, cell: cell, in: db)
            }
        case .inTrip:
            try Self.add(.inTrip, at: move.at, city: city, cell: cell, in: db)
            try Self.add(.pickups, at: move.at, city: city, cell: cell, in: db)
        case .completed:
            try Self.add(.completed, at: move.at, city: city, cell: cell, in: db)
            try Self.add(.dropoffs, at: move.at, city: order["dropoff_city"], cell: order["dropoff_cell"], in: db)
            if let started = try stateTime("in_trip") {
                try Self.add(.tripTime, seconds: move.at - started, at: move.at, city: city, cell: cell, in: db)
            }
        case .paid:
            try Self.add(.paid, at: move.at, city: city, cell: cell, in: db)
        case .expired:
            try Self.add(.expired, at: move.at, city: city, cell: cell, in: db)
        case .cancelled:
            try Self.add(.cancelled, at: move.at, city: city, cell: cell, in: db)
            let by: Metric =
                move.actor == (order["rider_id"] as String) ? .cancelledByRider
                : move.actor != nil && move.actor == (order["driver_id"] as String?) ? .cancelledByDriver : .cancelledByPlatform
            try Self.add(by, at: move.at, city: city, cell: cell, in: db)
            try Self.add(Metric.cancelledIn(move.from.rawValue), 1, at: move.at, city: city, cell: cell, in: db)
        case .created:
            break
        }
    }

    func paymentSucceeded(_ payment: PaymentEvents.Succeeded, in db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO payments (order_id, at, fare_cents, discount_cents, commission_cents, counted) VALUES (?, ?, ?, ?, ?, 0)
            """).execute(arguments: [payment.orderID, payment.at, payment.fareCents, payment.discountCents, payment.commissionCents])
        guard db.changesCount == 1,
            let order = try Row.fetchOne(db.cachedStatement(sql: "SELECT city, cell FROM orders WHERE id = ?"), arguments: [payment.orderID]),
            let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM payments WHERE order_id = ?"), arguments: [payment.orderID])
        else { return }
        try countPayment(row, city: order["city"], cell: order["cell"], in: db)
    }

    private func countPayment(_ payment: Row, city: String, cell: String?, in db: Database) throws {
        let at: Double = payment["at"]
        try Self.add(.gmv, payment["fare_cents"], at: at, city: city, cell: cell, in: db)
        try Self.add(.subsidy, payment["discount_cents"], at: at, city: city, cell: cell, in: db)
        try Self.add(.commission, payment["commission_cents"], at: at, city: city, cell: cell, in: db)
        try db.cachedStatement(sql: "UPDATE payments SET counted = 1 WHERE order_id = ?").execute(arguments: [payment["order_id"] as String])
    }

    func fixes(_ fixes: [LocationEvents.Fix], in db: Database) throws {
        for fix in fixes {
            let point = GeoPoint(lat: fix.lat, lon: fix.lon)
            guard point.isValid, Bounds.isEpochSeconds(fix.at), !fix.driverID.isEmpty else { continue }
            try db.cachedStatement(sql: "INSERT OR IGNORE INTO fixes (driver_id, at, lat, lon) VALUES (?, ?, ?, ?)")
                .execute(arguments: [fix.driverID, fix.at, fix.lat, fix.lon])
            guard db.changesCount == 1 else { continue }
            let place = grids.place(point)
            try Self.seeActive("driver", fix.driverID, at: fix.at, city: place.city, cell: place.cell, in: db)
            guard fix.state == "available" else { continue }
            if try Self.see("available", fix.driverID, at: fix.at, city: place.city, cell: place.cell, in: db) {
                try Self.add(.supply, at: fix.at, city: place.city, cell: place.cell, in: db)
            }
            if try Self.see("available-city", fix.driverID, at: fix.at, city: place.city, cell: nil, in: db) {
                try Self.add(.supplyCity, at: fix.at, city: place.city, cell: nil, in: db)
            }
        }
    }

    func quotes(_ quotes: [QuoteEvents.Quote], in db: Database) throws {
        for quote in quotes where Bounds.isEpochSeconds(quote.at) {
            let place = grids.place(GeoPoint(lat: quote.lat, lon: quote.lon))
            try Self.add(.quotes, at: quote.at, city: place.city, cell: place.cell, in: db)
            try Self.seeActive("rider", quote.riderID, at: quote.at, city: place.city, cell: place.cell, in: db)
        }
    }

    /// Claims and ad events carry no place: they count for the platform (city and cell empty), and a
    /// query for one city or cell leaves them out.
    func couponClaimed(_ claim: CouponEvents.Claimed, in db: Database) throws {
        try Self.add(.couponClaims, at: claim.claimedAt, city: "", cell: nil, in: db)
    }

    func adCounted(_ event: AdEvents.Counted, isClick: Bool, in db: Database) throws {
        try Self.add(isClick ? .adClicks : .adImpressions, at: event.at, city: "", cell: nil, in: db)
        try Self.add(.adSpend, event.chargedMillicents, at: event.at, city: "", cell: nil, in: db)
    }

    // MARK: Paths

    /// Completed trips not yet analysed, completed before `before`.
    func tripsToAnalyse(before: Double, limit: Int) async throws -> [String] {
        try await db.read { db in
            try String.fetchAll(
                db.cachedStatement(sql: """
                    SELECT s.order_id FROM order_states s LEFT JOIN trip_paths p ON p.order_id = s.order_id
                    WHERE s.state = 'completed' AND s.at < ? AND p.order_id IS NULL ORDER BY s.at LIMIT ?
                    """),
                arguments: [before, limit])
        }
    }

    /// A trip's facts and its driver's fixes from assignment to completion (to now, while it runs).
    func trip(_ id: String) async throws -> (facts: TripFacts, fixes: [(GeoPoint, Double)])? {
        try await db.read { db in
            guard let order = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM orders WHERE id = ?"), arguments: [id]) else {
                return nil
            }
            var times: [String: Double] = [:]
            for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT state, at FROM order_states WHERE order_id = ?"), arguments: [id]) {
                times[row["state"]] = row["at"]
            }
            let facts = TripFacts(
                orderID: id, driverID: order["driver_id"], state: order["state"],
                pickup: GeoPoint(lat: order["pickup_lat"], lon: order["pickup_lon"]),
                dropoff: GeoPoint(lat: order["dropoff_lat"], lon: order["dropoff_lon"]),
                assignedAt: times["assigned"], startedAt: times["in_trip"], completedAt: times["completed"])
            guard let driver = facts.driverID, let from = facts.assignedAt else { return (facts, []) }
            let until = facts.completedAt ?? times["cancelled"] ?? .greatestFiniteMagnitude
            let fixes = try Row.fetchAll(
                db.cachedStatement(sql: "SELECT lat, lon, at FROM fixes WHERE driver_id = ? AND at >= ? AND at <= ? ORDER BY at"),
                arguments: [driver, from, until]
            ).map { (GeoPoint(lat: $0["lat"], lon: $0["lon"]), $0["at"] as Double) }
            return (facts, fixes)
        }
    }

    func savePath(_ analysis: AnalyticsAPI.TripAnalysis) async throws {
        let text = String(decoding: try Self.encoder.encode(analysis), as: UTF8.self)
        try await db.write { db in
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO trip_paths (order_id, completed_at, flagged, analysis) VALUES (?, ?, ?, ?)")
                .execute(arguments: [analysis.orderID, analysis.completedAt ?? 0, analysis.flags.isEmpty ? 0 : 1, text])
        }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()
}

/// Durations in buckets 2 % wide from 1 ms up: percentiles read from them are within 1 % of the true
/// value, whatever the range summed.
enum DurationBuckets {
    static let growth = 1.02
    static let floor = 0.001

    static func bucket(_ seconds: Double) -> Int {
        guard seconds.isFinite, seconds > floor else { return 0 }
        return min(5000, Int((log(seconds / floor) / log(growth)).rounded(.down)) + 1)
    }

    /// The middle of a bucket (geometrically).
    static func value(_ bucket: Int) -> Double {
        bucket <= 0 ? 0 : floor * pow(growth, Double(bucket) - 0.5)
    }

    static func percentiles(_ counts: [Int: Int]) -> AnalyticsAPI.Percentiles? {
        let total = counts.values.reduce(0, +)
        guard total > 0 else { return nil }
        let sorted = counts.sorted { $0.key < $1.key }
        func at(_ share: Double) -> Double {
            let rank = max(1, Int((share * Double(total)).rounded(.up)))
            var seen = 0
            for (bucket, count) in sorted {
                seen += count
                if seen >= rank { return (value(bucket) * 1000).rounded() / 1000 }
            }
            return value(sorted.last!.key)
        }
        return AnalyticsAPI.Percentiles(count: total, p50: at(0.5), p90: at(0.9), p99: at(0.99))
    }
}
