import Contracts
import EventBus
import Foundation
import HailKit
import Metrics
import SQLiteKit

/// Settlement's own books, kept from the order and payment streams: completed orders, payments and a
/// copy of their ledger entries; and what it decided: batches and payouts. Each ledger entry carries the
/// batch that paid it, set in the batch's one transaction, so an entry is paid once however many runs
/// overlap.
struct SettlementStore: Sendable {
    let db: SQLiteStore

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-settlement") { db in
            try db.execute(sql: """
                CREATE TABLE completed_orders (
                    order_id TEXT PRIMARY KEY,
                    rider_id TEXT NOT NULL,
                    driver_id TEXT,
                    fare_cents INTEGER NOT NULL,
                    completed_at REAL NOT NULL,
                    paid_at REAL
                );
                CREATE TABLE payments (
                    payment_id TEXT PRIMARY KEY,
                    order_id TEXT NOT NULL,
                    driver_id TEXT NOT NULL,
                    state TEXT NOT NULL,
                    fare_cents INTEGER NOT NULL,
                    discount_cents INTEGER NOT NULL,
                    amount_cents INTEGER NOT NULL,
                    at REAL NOT NULL
                );
                CREATE INDEX payments_order ON payments(order_id);
                CREATE TABLE entries (
                    id TEXT PRIMARY KEY,
                    payment_id TEXT NOT NULL,
                    account TEXT NOT NULL,
                    driver_id TEXT,
                    amount_cents INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    at REAL NOT NULL,
                    batch_id TEXT
                );
                CREATE INDEX entries_unsettled ON entries(driver_id, batch_id);
                CREATE TABLE batches (
                    id TEXT PRIMARY KEY,
                    trigger TEXT NOT NULL,
                    started_at REAL NOT NULL,
                    entries INTEGER NOT NULL,
                    total_cents INTEGER NOT NULL
                );
                CREATE TABLE payouts (
                    batch_id TEXT NOT NULL REFERENCES batches(id),
                    driver_id TEXT NOT NULL,
                    amount_cents INTEGER NOT NULL,
                    entries INTEGER NOT NULL,
                    PRIMARY KEY (batch_id, driver_id)
                );
                """)
        }
        ProcessedEvents.addMigrations(to: &migrations)
        return migrations
    }

    // MARK: From the streams

    func recordCompleted(_ moved: OrderEvents.Moved, in db: Database) throws {
        try db.execute(
            sql: "INSERT OR IGNORE INTO completed_orders (order_id, rider_id, driver_id, fare_cents, completed_at) VALUES (?, ?, ?, ?, ?)",
            arguments: [moved.orderID, moved.riderID, moved.driverID, moved.fareCents, moved.at])
    }

    func recordPaid(_ moved: OrderEvents.Moved, in db: Database) throws {
        try db.execute(sql: "UPDATE completed_orders SET paid_at = ? WHERE order_id = ?", arguments: [moved.at, moved.orderID])
    }

    func recordPayment(_ paid: PaymentEvents.Succeeded, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT OR IGNORE INTO payments (payment_id, order_id, driver_id, state, fare_cents, discount_cents, amount_cents, at)
                VALUES (?, ?, ?, 'succeeded', ?, ?, ?, ?)
                """,
            arguments: [paid.paymentID, paid.orderID, paid.driverID, paid.fareCents, paid.discountCents, paid.amountCents, paid.at])
        try Self.insert(paid.entries, in: db)
    }

    func recordRefund(_ refund: PaymentEvents.Refunded, in db: Database) throws {
        try db.execute(sql: "UPDATE payments SET state = 'refunded' WHERE payment_id = ?", arguments: [refund.paymentID])
        try Self.insert(refund.entries, in: db)
    }

    private static func insert(_ entries: [PaymentAPI.LedgerEntry], in db: Database) throws {
        for entry in entries {
            let driver = entry.account.hasPrefix("driver:") ? String(entry.account.dropFirst("driver:".count)) : nil
            try db.execute(
                sql: "INSERT OR IGNORE INTO entries (id, payment_id, account, driver_id, amount_cents, kind, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [entry.id, entry.paymentID, entry.account, driver, entry.amountCents, entry.kind, entry.at])
        }
    }

    // MARK: Batches

    /// Pays every driver whose unsettled entries add up to more than nothing, and marks those entries with
    /// the batch — one transaction, so a run that overlaps another finds them taken. A driver whose refunds
    /// outweigh new earnings is carried to a later batch rather than paid a negative amount.
    func runBatch(trigger: String, now: Double) async throws -> SettlementAPI.Batch {
        let batch = try await db.write { db in
            let id = RandomID.uuid()
            let owed = try Row.fetchAll(
                db,
                sql: """
                    SELECT driver_id, SUM(amount_cents) AS amount, COUNT(*) AS n FROM entries
                    WHERE batch_id IS NULL AND driver_id IS NOT NULL GROUP BY driver_id HAVING SUM(amount_cents) > 0
                    ORDER BY driver_id
                    """)
            try db.execute(
                sql: "INSERT INTO batches (id, trigger, started_at, entries, total_cents) VALUES (?, ?, ?, 0, 0)",
                arguments: [id, trigger, now])
            var payouts: [SettlementAPI.Payout] = []
            for row in owed {
                let driver: String = row["driver_id"]
                try db.execute(
                    sql: "UPDATE entries SET batch_id = ? WHERE batch_id IS NULL AND driver_id = ?", arguments: [id, driver])
                let payout = SettlementAPI.Payout(batchID: id, driverID: driver, amountCents: row["amount"], entries: row["n"])
                try db.execute(
                    sql: "INSERT INTO payouts (batch_id, driver_id, amount_cents, entries) VALUES (?, ?, ?, ?)",
                    arguments: [id, driver, payout.amountCents, payout.entries])
                payouts.append(payout)
            }
            let entries = payouts.reduce(0) { $0 + $1.entries }
            let total = payouts.reduce(0) { $0 + $1.amountCents }
            try db.execute(sql: "UPDATE batches SET entries = ?, total_cents = ? WHERE id = ?", arguments: [entries, total, id])
            return SettlementAPI.Batch(id: id, trigger: trigger, startedAt: now, entries: entries, totalCents: total, payouts: payouts)
        }
        Counter(label: "hailstorm_settlement_batches_total", dimensions: [("trigger", trigger)]).increment()
        Counter(label: "hailstorm_settlement_paid_cents_total").increment(by: batch.totalCents)
        Counter(label: "hailstorm_settlement_entries_total").increment(by: batch.entries)
        return batch
    }

    func batches(limit: Int) async throws -> [SettlementAPI.Batch] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM batches ORDER BY started_at DESC, id LIMIT ?", arguments: [limit]).map { row in
                let id: String = row["id"]
                let payouts = try Row.fetchAll(
                    db, sql: "SELECT * FROM payouts WHERE batch_id = ? ORDER BY driver_id", arguments: [id]
                ).map {
                    SettlementAPI.Payout(batchID: id, driverID: $0["driver_id"], amountCents: $0["amount_cents"], entries: $0["entries"])
                }
                return SettlementAPI.Batch(
                    id: id, trigger: row["trigger"], startedAt: row["started_at"], entries: row["entries"],
                    totalCents: row["total_cents"], payouts: payouts)
            }
        }
    }

    // MARK: Reconciliation

    /// Compares what settlement was told: completed orders against payments, payments against their
    /// entries, entries against the payment service's ledger (`ledger`), payouts against the entries they
    /// settled. Orders completed less than `grace` ago may still be being paid and are not listed.
    func reconcile(ledger: PaymentAPI.Ledger, grace: Double, now: Double) async throws -> SettlementAPI.Reconciliation {
        try await db.read { db in
            var mismatches: [SettlementAPI.Mismatch] = []
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT o.order_id, o.fare_cents FROM completed_orders o
                    WHERE o.completed_at < ? AND NOT EXISTS (
                        SELECT 1 FROM payments p WHERE p.order_id = o.order_id AND p.state IN ('succeeded', 'refunded'))
                    ORDER BY o.completed_at
                    """,
                arguments: [now - grace])
            {
                mismatches.append(.init(
                    kind: "completed-not-paid", orderID: row["order_id"],
                    detail: "completed, fare \(row["fare_cents"] as Int) cents, and no payment after the grace period"))
            }
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT p.*, o.fare_cents AS order_fare FROM payments p LEFT JOIN completed_orders o ON o.order_id = p.order_id
                    ORDER BY p.at
                    """)
            {
                let payment: String = row["payment_id"]
                let order: String = row["order_id"]
                let fare: Int = row["fare_cents"]
                let discount: Int = row["discount_cents"]
                let amount: Int = row["amount_cents"]
                if let orderFare = row["order_fare"] as Int? {
                    if orderFare != fare {
                        mismatches.append(.init(
                            kind: "fare-mismatch", orderID: order, paymentID: payment,
                            detail: "the payment's fare is \(fare) cents; the order's is \(orderFare)"))
                    }
                } else {
                    mismatches.append(.init(
                        kind: "paid-not-completed", orderID: order, paymentID: payment,
                        detail: "a payment of \(amount) cents for an order never seen completed"))
                }
                if amount != fare - discount {
                    mismatches.append(.init(
                        kind: "amount-mismatch", orderID: order, paymentID: payment,
                        detail: "charged \(amount) cents for a fare of \(fare) less \(discount)"))
                }
            }
            for row in try Row.fetchAll(
                db,
                sql: "SELECT payment_id, kind, SUM(amount_cents) AS total FROM entries GROUP BY payment_id, kind HAVING SUM(amount_cents) != 0")
            {
                mismatches.append(.init(
                    kind: "unbalanced-payment", paymentID: row["payment_id"],
                    detail: "its \(row["kind"] as String) entries sum to \(row["total"] as Int) cents, not zero"))
            }
            if ledger.totalCents != 0 {
                mismatches.append(.init(
                    kind: "ledger-unbalanced", detail: "the payment service's ledger sums to \(ledger.totalCents) cents, not zero"))
            }
            for payment in ledger.unbalancedPayments {
                mismatches.append(.init(kind: "unbalanced-payment", paymentID: payment, detail: "unbalanced in the payment service's ledger"))
            }
            var theirs: [String: Int] = [:]
            for account in ledger.accounts where account.account.hasPrefix("driver:") {
                theirs[String(account.account.dropFirst("driver:".count))] = account.balanceCents
            }
            var ours: [String: Int] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT driver_id, SUM(amount_cents) AS total FROM entries WHERE driver_id IS NOT NULL GROUP BY driver_id")
            {
                ours[row["driver_id"]] = row["total"]
            }
            for driver in Set(theirs.keys).union(ours.keys).sorted() where theirs[driver, default: 0] != ours[driver, default: 0] {
                mismatches.append(.init(
                    kind: "ledger-differs", driverID: driver,
                    detail: "the payment ledger says \(theirs[driver, default: 0]) cents earned; settlement's copy says \(ours[driver, default: 0])"))
            }
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT p.batch_id, p.driver_id, p.amount_cents,
                        (SELECT COALESCE(SUM(e.amount_cents), 0) FROM entries e WHERE e.batch_id = p.batch_id AND e.driver_id = p.driver_id) AS settled
                    FROM payouts p WHERE p.amount_cents != settled
                    """)
            {
                mismatches.append(.init(
                    kind: "payout-mismatch", driverID: row["driver_id"],
                    detail: "batch \(row["batch_id"] as String) paid \(row["amount_cents"] as Int) cents for entries of \(row["settled"] as Int)"))
            }
            let completed = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM completed_orders") ?? 0
            let payments = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM payments") ?? 0
            let earnings = try Int.fetchOne(
                db, sql: "SELECT COALESCE(SUM(amount_cents), 0) FROM entries WHERE driver_id IS NOT NULL") ?? 0
            let paidOut = try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(amount_cents), 0) FROM payouts") ?? 0
            let unsettled = try Int.fetchOne(
                db, sql: "SELECT COALESCE(SUM(amount_cents), 0) FROM entries WHERE driver_id IS NOT NULL AND batch_id IS NULL") ?? 0
            return SettlementAPI.Reconciliation(
                generatedAt: now, completedOrders: completed, payments: payments, ledgerTotalCents: ledger.totalCents,
                driverEarningsCents: earnings, paidOutCents: paidOut, unsettledCents: unsettled, mismatches: mismatches)
        }
    }
}
