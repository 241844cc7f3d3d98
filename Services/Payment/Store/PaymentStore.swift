import Contracts
import EventBus
import Foundation
import HailKit
import SQLiteKit

/// Payments, the ledger and the outbox, in the payment service's own SQLite file. A payment's final
/// state, its ledger entries and the event announcing it commit together or not at all.
struct PaymentStore: Sendable {
    let db: SQLiteStore
    let source: String

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-payments") { db in
            try db.execute(sql: """
                CREATE TABLE payments (
                    id TEXT PRIMARY KEY,
                    order_id TEXT NOT NULL,
                    rider_id TEXT NOT NULL,
                    driver_id TEXT NOT NULL,
                    idempotency_key TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('processing', 'succeeded', 'failed', 'refunded')),
                    fare_cents INTEGER NOT NULL,
                    discount_cents INTEGER NOT NULL DEFAULT 0,
                    amount_cents INTEGER NOT NULL,
                    commission_cents INTEGER NOT NULL DEFAULT 0,
                    coupon_id TEXT,
                    currency TEXT NOT NULL,
                    payment_method TEXT NOT NULL,
                    provider_reference TEXT,
                    failure_reason TEXT,
                    refund_reason TEXT,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    UNIQUE (rider_id, idempotency_key)
                );
                -- One live payment per order: a failed one may be tried again, a second charge may not happen.
                CREATE UNIQUE INDEX payments_live_order ON payments(order_id) WHERE state IN ('processing', 'succeeded', 'refunded');
                CREATE INDEX payments_processing ON payments(state, updated_at);
                CREATE TABLE ledger_entries (
                    id TEXT PRIMARY KEY,
                    payment_id TEXT NOT NULL REFERENCES payments(id),
                    account TEXT NOT NULL,
                    amount_cents INTEGER NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN ('payment', 'refund')),
                    at REAL NOT NULL
                );
                CREATE INDEX ledger_payment ON ledger_entries(payment_id);
                CREATE INDEX ledger_account ON ledger_entries(account);
                """)
        }
        Outbox.addMigrations(to: &migrations)
        return migrations
    }

    enum Begin: Sendable {
        /// A new payment, now `processing`: this request carries it on.
        case started(PaymentAPI.Payment)
        /// The key was used before: its payment, in whatever state it is.
        case existing(PaymentAPI.Payment)
    }

    /// The payment a rider's Idempotency-Key already names, if any. A key used for another order is a 422.
    func payment(rider: String, idempotencyKey: String, orderID: String) async throws -> PaymentAPI.Payment? {
        try await db.read { db in try Self.keyed(rider: rider, key: idempotencyKey, orderID: orderID, in: db) }
    }

    /// Claims the rider's Idempotency-Key and the order for a new payment, or finds the payment the key
    /// already names. A different key for an order with a live payment is refused.
    func begin(_ payment: PaymentAPI.Payment, idempotencyKey: String, method: String) async throws -> Begin {
        try await db.write { db in
            if let existing = try Self.keyed(rider: payment.riderID, key: idempotencyKey, orderID: payment.orderID, in: db) {
                return .existing(existing)
            }
            if let live = try Self.fetch(
                db, where: "order_id = ? AND state IN ('processing', 'succeeded', 'refunded')", [payment.orderID])
            {
                throw live.state == .processing
                    ? Problem.conflict("payment-in-progress", "Order \(payment.orderID) is being paid now (payment \(live.id))")
                    : Problem.conflict("already-paid", "Order \(payment.orderID) was paid (payment \(live.id))")
            }
            try db.execute(
                sql: """
                    INSERT INTO payments (id, order_id, rider_id, driver_id, idempotency_key, state, fare_cents, discount_cents,
                        amount_cents, commission_cents, coupon_id, currency, payment_method, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, 'processing', ?, 0, ?, 0, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    payment.id, payment.orderID, payment.riderID, payment.driverID, idempotencyKey, payment.fareCents,
                    payment.fareCents, payment.couponID, payment.currency, method, payment.createdAt, payment.createdAt,
                ])
            return .started(payment)
        }
    }

    /// Forgets a payment that never reached the provider (its coupon was refused), freeing its key.
    func abandon(_ id: String) async throws {
        try await db.write { db in
            try db.execute(sql: "DELETE FROM payments WHERE id = ? AND state = 'processing'", arguments: [id])
        }
    }

    /// Records the discount before charging, so a recovery after a crash charges the same amount.
    func price(_ id: String, discountCents: Int, commissionCents: Int) async throws {
        try await db.write { db in
            try db.execute(
                sql: "UPDATE payments SET discount_cents = ?, amount_cents = fare_cents - ?, commission_cents = ? WHERE id = ? AND state = 'processing'",
                arguments: [discountCents, discountCents, commissionCents, id])
        }
    }

    /// The provider approved: `succeeded`, the ledger entries and `payment.succeeded`, in one transaction.
    func succeed(_ id: String, providerReference: String, rules: LedgerRules, now: Double) async throws -> PaymentAPI.Payment {
        let source = self.source
        return try await db.write { db in
            guard var payment = try Self.fetch(db, where: "id = ?", [id]) else { throw Problem.notFound("No payment \(id)") }
            guard payment.state == .processing else { return payment }
            let entries = rules.entries(
                payment: id, rider: payment.riderID, driver: payment.driverID, fareCents: payment.fareCents,
                discountCents: payment.discountCents, at: now)
            try Self.insert(entries, in: db)
            try db.execute(
                sql: "UPDATE payments SET state = 'succeeded', provider_reference = ?, updated_at = ? WHERE id = ?",
                arguments: [providerReference, now, id])
            payment = try Self.fetch(db, where: "id = ?", [id]) ?? payment
            try Outbox.enqueue(
                PaymentEvents.Succeeded(
                    paymentID: id, orderID: payment.orderID, riderID: payment.riderID, driverID: payment.driverID,
                    fareCents: payment.fareCents, discountCents: payment.discountCents, amountCents: payment.amountCents,
                    commissionCents: payment.commissionCents, couponID: payment.couponID, entries: entries, at: now),
                source: source, in: db)
            return payment
        }
    }

    /// The provider declined (or the charge never happened): `failed` and `payment.failed`, no ledger entry.
    func fail(_ id: String, reason: String, now: Double) async throws -> PaymentAPI.Payment {
        let source = self.source
        return try await db.write { db in
            guard var payment = try Self.fetch(db, where: "id = ?", [id]) else { throw Problem.notFound("No payment \(id)") }
            guard payment.state == .processing else { return payment }
            try db.execute(
                sql: "UPDATE payments SET state = 'failed', failure_reason = ?, updated_at = ? WHERE id = ?",
                arguments: [reason, now, id])
            payment = try Self.fetch(db, where: "id = ?", [id]) ?? payment
            try Outbox.enqueue(
                PaymentEvents.Failed(
                    paymentID: id, orderID: payment.orderID, riderID: payment.riderID, couponID: payment.couponID,
                    reason: reason, at: now),
                source: source, in: db)
            return payment
        }
    }

    /// Reverses a succeeded payment's entries. A refunded payment is answered as it is.
    func refund(_ id: String, reason: String, rules: LedgerRules, now: Double) async throws -> PaymentAPI.Payment {
        let source = self.source
        return try await db.write { db in
            guard let payment = try Self.fetch(db, where: "id = ?", [id]) else { throw Problem.notFound("No payment \(id)") }
            switch payment.state {
            case .refunded: return payment
            case .processing, .failed:
                throw Problem.conflict("not-refundable", "Payment \(id) is \(payment.state.rawValue); only a succeeded payment can be refunded")
            case .succeeded: break
            }
            let reversal = rules.reversal(of: payment.entries, at: now)
            try Self.insert(reversal, in: db)
            try db.execute(
                sql: "UPDATE payments SET state = 'refunded', refund_reason = ?, updated_at = ? WHERE id = ?",
                arguments: [reason, now, id])
            try Outbox.enqueue(
                PaymentEvents.Refunded(
                    paymentID: id, orderID: payment.orderID, driverID: payment.driverID, entries: reversal, reason: reason, at: now),
                source: source, in: db)
            return try Self.fetch(db, where: "id = ?", [id]) ?? payment
        }
    }

    func payment(id: String) async throws -> PaymentAPI.Payment? {
        try await db.read { db in try Self.fetch(db, where: "id = ?", [id]) }
    }

    /// Payments left `processing` since before `cutoff`: their request died with the process.
    func stuck(before cutoff: Double, limit: Int = 100) async throws -> [PaymentAPI.Payment] {
        try await db.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM payments WHERE state = 'processing' AND updated_at < ? ORDER BY updated_at LIMIT ?",
                arguments: [cutoff, limit]
            ).map { try Self.payment($0, in: db) }
        }
    }

    func paymentMethod(of id: String) async throws -> String {
        try await db.read { db in
            try String.fetchOne(db, sql: "SELECT payment_method FROM payments WHERE id = ?", arguments: [id]) ?? ""
        }
    }

    /// Balances, their total and any payment whose entries do not cancel out.
    func ledger(account: String?) async throws -> PaymentAPI.Ledger {
        try await db.read { db in
            let total = try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(amount_cents), 0) FROM ledger_entries") ?? 0
            let entries = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ledger_entries") ?? 0
            let payments = try Int.fetchOne(db, sql: "SELECT COUNT(DISTINCT payment_id) FROM ledger_entries") ?? 0
            var sql = "SELECT account, SUM(amount_cents) AS balance FROM ledger_entries"
            var arguments: StatementArguments = []
            if let account {
                sql += " WHERE account = ?"
                arguments += [account]
            }
            sql += " GROUP BY account ORDER BY account"
            let balances = try Row.fetchAll(db, sql: sql, arguments: arguments).map {
                PaymentAPI.AccountBalance(account: $0["account"], balanceCents: $0["balance"])
            }
            let unbalanced = try String.fetchAll(
                db, sql: "SELECT payment_id FROM ledger_entries GROUP BY payment_id, kind HAVING SUM(amount_cents) != 0")
            return PaymentAPI.Ledger(
                totalCents: total, entries: entries, payments: payments, accounts: balances, unbalancedPayments: unbalanced)
        }
    }

    // MARK: Rows

    static func keyed(rider: String, key: String, orderID: String, in db: Database) throws -> PaymentAPI.Payment? {
        guard let existing = try fetch(db, where: "rider_id = ? AND idempotency_key = ?", [rider, key]) else { return nil }
        guard existing.orderID == orderID else {
            throw Problem.idempotencyKeyReused("This key paid order \(existing.orderID); use a new key for order \(orderID)")
        }
        return existing
    }

    static func insert(_ entries: [PaymentAPI.LedgerEntry], in db: Database) throws {
        for entry in entries {
            try db.execute(
                sql: "INSERT INTO ledger_entries (id, payment_id, account, amount_cents, kind, at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [entry.id, entry.paymentID, entry.account, entry.amountCents, entry.kind, entry.at])
        }
    }

    static func fetch(_ db: Database, where condition: String, _ arguments: StatementArguments) throws -> PaymentAPI.Payment? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM payments WHERE \(condition)", arguments: arguments) else {
            return nil
        }
        return try payment(row, in: db)
    }

    static func payment(_ row: Row, in db: Database) throws -> PaymentAPI.Payment {
        let id: String = row["id"]
        let entries = try Row.fetchAll(
            db, sql: "SELECT * FROM ledger_entries WHERE payment_id = ? ORDER BY kind, id", arguments: [id]
        ).map {
            PaymentAPI.LedgerEntry(
                id: $0["id"], paymentID: id, account: $0["account"], amountCents: $0["amount_cents"], kind: $0["kind"], at: $0["at"])
        }
        return PaymentAPI.Payment(
            id: id, orderID: row["order_id"], riderID: row["rider_id"], driverID: row["driver_id"],
            state: PaymentAPI.PaymentState(rawValue: row["state"]) ?? .processing, fareCents: row["fare_cents"],
            discountCents: row["discount_cents"], amountCents: row["amount_cents"], commissionCents: row["commission_cents"],
            couponID: row["coupon_id"], currency: row["currency"], providerReference: row["provider_reference"],
            failureReason: row["failure_reason"], createdAt: row["created_at"], updatedAt: row["updated_at"], entries: entries)
    }
}
