import Contracts
import EventBus
import Foundation
import HailKit
import SQLiteKit

/// Campaigns and claims, in the coupon service's own SQLite file.
struct CouponStore: Sendable {
    let db: SQLiteStore

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-coupons") { db in
            try db.execute(sql: """
                CREATE TABLE campaigns (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    city TEXT NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN ('amount', 'percent')),
                    amount_off_cents INTEGER,
                    percent_off INTEGER,
                    minimum_fare_cents INTEGER NOT NULL,
                    stock INTEGER NOT NULL,
                    per_user_limit INTEGER NOT NULL,
                    starts_at REAL NOT NULL,
                    ends_at REAL NOT NULL,
                    created_at REAL NOT NULL,
                    idempotency_key TEXT UNIQUE
                );
                CREATE TABLE claims (
                    claim_id TEXT PRIMARY KEY,
                    campaign_id TEXT NOT NULL REFERENCES campaigns(id),
                    user_id TEXT NOT NULL,
                    claimed_at REAL NOT NULL,
                    state TEXT NOT NULL DEFAULT 'available' CHECK (state IN ('available', 'redeemed')),
                    redeemed_at REAL,
                    redeemed_for TEXT
                );
                CREATE INDEX claims_user ON claims(user_id);
                CREATE INDEX claims_campaign ON claims(campaign_id, user_id);
                """)
        }
        ProcessedEvents.addMigrations(to: &migrations)
        Outbox.addMigrations(to: &migrations)
        // Which payment holds a redeemed coupon, so that a `payment.failed` delivered late (after a later
        // payment of the same order redeemed it again) gives nothing back.
        migrations.add("v2-redeemed-by-payment") { db in
            try db.execute(sql: "ALTER TABLE claims ADD COLUMN redeemed_by TEXT")
        }
        migrations.add("v3-claim-idempotency-key") { db in
            try db.execute(sql: "ALTER TABLE claims ADD COLUMN idempotency_key TEXT")
        }
        migrations.add("v4-campaign-paused") { db in
            try db.execute(sql: "ALTER TABLE campaigns ADD COLUMN paused INTEGER NOT NULL DEFAULT 0")
        }
        return migrations
    }

    /// Inserts the campaign, or returns the one an earlier request with the same key created.
    func create(_ campaign: CouponAPI.Campaign, idempotencyKey: String?) async throws -> CouponAPI.Campaign {
        try await db.write { db in
            if let idempotencyKey,
                let existing = try Row.fetchOne(
                    db, sql: "SELECT * FROM campaigns WHERE idempotency_key = ?", arguments: [idempotencyKey])
            {
                let first = Self.campaign(existing)
                guard Self.sameRequest(first, campaign) else {
                    throw Problem.idempotencyKeyReused(
                        "This key created campaign \(first.id) with other settings; use a new key for a new campaign")
                }
                return first
            }
            try db.execute(
                sql: """
                    INSERT INTO campaigns (id, name, city, kind, amount_off_cents, percent_off, minimum_fare_cents,
                        stock, per_user_limit, starts_at, ends_at, created_at, idempotency_key)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    campaign.id, campaign.name, campaign.city, campaign.kind.rawValue, campaign.amountOffCents,
                    campaign.percentOff, campaign.minimumFareCents, campaign.stock, campaign.perUserLimit,
                    campaign.startsAt, campaign.endsAt, campaign.createdAt, idempotencyKey,
                ])
            return campaign
        }
    }

    /// Whether two campaigns were asked for with the same settings (ids and creation times aside).
    static func sameRequest(_ a: CouponAPI.Campaign, _ b: CouponAPI.Campaign) -> Bool {
        a.name == b.name && a.city == b.city && a.kind == b.kind && a.amountOffCents == b.amountOffCents
            && a.percentOff == b.percentOff && a.minimumFareCents == b.minimumFareCents && a.stock == b.stock
            && a.perUserLimit == b.perUserLimit && a.startsAt == b.startsAt && a.endsAt == b.endsAt
    }

    func campaign(id: String) async throws -> CouponAPI.Campaign? {
        try await db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM campaigns WHERE id = ?", arguments: [id]).map(Self.campaign)
        }
    }

    /// Pauses or resumes a campaign; answers it as it is now, and whether this changed it (nil: no such
    /// campaign).
    func setPaused(_ paused: Bool, campaign id: String) async throws -> (campaign: CouponAPI.Campaign, changed: Bool)? {
        try await db.write { db in
            try db.execute(sql: "UPDATE campaigns SET paused = ? WHERE id = ? AND paused <> ?", arguments: [paused, id, paused])
            let changed = db.changesCount > 0
            return try Row.fetchOne(db, sql: "SELECT * FROM campaigns WHERE id = ?", arguments: [id]).map { (Self.campaign($0), changed) }
        }
    }

    /// Campaigns that have not ended, soonest first.
    func current(now: Double) async throws -> [CouponAPI.Campaign] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM campaigns WHERE ends_at > ? ORDER BY starts_at", arguments: [now])
                .map(Self.campaign)
        }
    }

    /// Stores a granted claim once, however often the stream delivers it.
    func record(_ claim: CouponEvents.Claimed, in db: Database) throws {
        try db.cachedStatement(
            sql: "INSERT OR IGNORE INTO claims (claim_id, campaign_id, user_id, claimed_at, idempotency_key) VALUES (?, ?, ?, ?, ?)"
        ).execute(arguments: [claim.claimID, claim.campaignID, claim.userID, claim.claimedAt, claim.idempotencyKey])
    }

    /// What a sale's Redis state is rebuilt from: claims per rider, and the idempotency answers of claims
    /// made since `keysSince`.
    struct SaleRecord: Sendable {
        var claimed: Int
        var perUser: [(user: String, claims: Int)]
        var keys: [(user: String, key: String, claimID: String, claimedAt: Double)]
    }

    func saleRecord(campaign: String, keysSince: Double) async throws -> SaleRecord {
        try await db.read { db in
            let perUser = try Row.fetchAll(
                db, sql: "SELECT user_id, COUNT(*) AS n FROM claims WHERE campaign_id = ? GROUP BY user_id", arguments: [campaign]
            ).map { (user: $0["user_id"] as String, claims: $0["n"] as Int) }
            let keys = try Row.fetchAll(
                db,
                sql: """
                    SELECT user_id, idempotency_key, claim_id, claimed_at FROM claims
                    WHERE campaign_id = ? AND idempotency_key IS NOT NULL AND claimed_at >= ?
                    """,
                arguments: [campaign, keysSince]
            ).map { (user: $0["user_id"] as String, key: $0["idempotency_key"] as String, claimID: $0["claim_id"] as String, claimedAt: $0["claimed_at"] as Double) }
            return SaleRecord(claimed: perUser.reduce(0) { $0 + $1.claims }, perUser: perUser, keys: keys)
        }
    }

    func wallet(user: String) async throws -> [CouponAPI.Coupon] {
        try await db.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT c.*, k.claim_id, k.claimed_at, k.state FROM claims k JOIN campaigns c ON c.id = k.campaign_id
                    WHERE k.user_id = ? ORDER BY k.claimed_at DESC
                    """,
                arguments: [user]
            ).map { row in
                CouponAPI.Coupon(
                    claimID: row["claim_id"], campaign: Self.campaign(row), claimedAt: row["claimed_at"], state: row["state"])
            }
        }
    }

    /// Takes a coupon for an order: the discount it gives on `fare`. A repeat for the same order answers
    /// the same discount, so payment may retry.
    func redeem(claim claimID: String, _ request: CouponAPI.RedeemRequest, now: Double) async throws -> CouponAPI.Redemption {
        try await db.write { db in
            guard let row = try Row.fetchOne(
                db,
                sql: "SELECT c.*, k.user_id, k.state, k.redeemed_for FROM claims k JOIN campaigns c ON c.id = k.campaign_id WHERE k.claim_id = ?",
                arguments: [claimID])
            else {
                throw Problem.notFound("No coupon \(claimID) in the wallet (a coupon claimed a moment ago may still be on its way)")
            }
            guard row["user_id"] == request.userID else { throw Problem.forbidden("Coupon \(claimID) is not yours") }
            let campaign = Self.campaign(row)
            let discount = Self.discount(campaign, fareCents: request.fareCents)
            let redeemedFor: String? = row["redeemed_for"]
            if row["state"] == "redeemed" {
                guard redeemedFor == request.orderID else {
                    throw Problem.conflict("coupon-redeemed", "Coupon \(claimID) was used for another ride", field: "couponID")
                }
                // A new payment of the same order takes the coupon over from one that failed before it
                // could give it back.
                if let payment = request.paymentID {
                    try db.execute(sql: "UPDATE claims SET redeemed_by = ? WHERE claim_id = ?", arguments: [payment, claimID])
                }
                return CouponAPI.Redemption(claimID: claimID, orderID: request.orderID, discountCents: discount)
            }
            guard request.fareCents >= campaign.minimumFareCents else {
                throw Problem.conflict(
                    "coupon-not-applicable",
                    "Coupon \(claimID) applies to fares of \(campaign.minimumFareCents) cents or more", field: "couponID")
            }
            try db.execute(
                sql: "UPDATE claims SET state = 'redeemed', redeemed_at = ?, redeemed_for = ?, redeemed_by = ? WHERE claim_id = ?",
                arguments: [now, request.orderID, request.paymentID, claimID])
            return CouponAPI.Redemption(claimID: claimID, orderID: request.orderID, discountCents: discount)
        }
    }

    /// Gives a coupon back after its payment failed. Only a coupon redeemed for `order` changes, and, when
    /// the failed payment is named, only if that payment still holds it (a later one may have taken it over).
    @discardableResult
    func release(claim claimID: String, order: String, payment: String? = nil) async throws -> Bool {
        try await db.write { db in try Self.release(claim: claimID, order: order, payment: payment, in: db) }
    }

    static func release(claim claimID: String, order: String, payment: String?, in db: Database) throws -> Bool {
        try db.execute(
            sql: """
                UPDATE claims SET state = 'available', redeemed_at = NULL, redeemed_for = NULL, redeemed_by = NULL
                WHERE claim_id = ? AND state = 'redeemed' AND redeemed_for = ?
                  AND (? IS NULL OR redeemed_by IS NULL OR redeemed_by = ?)
                """,
            arguments: [claimID, order, payment, payment])
        return db.changesCount == 1
    }

    func coupon(claim claimID: String) async throws -> CouponAPI.Coupon? {
        try await db.read { db in
            try Row.fetchOne(
                db,
                sql: "SELECT c.*, k.claim_id, k.claimed_at, k.state FROM claims k JOIN campaigns c ON c.id = k.campaign_id WHERE k.claim_id = ?",
                arguments: [claimID]
            ).map { row in
                CouponAPI.Coupon(claimID: row["claim_id"], campaign: Self.campaign(row), claimedAt: row["claimed_at"], state: row["state"])
            }
        }
    }

    /// Cents off `fare`: a fixed amount (never more than the fare) or a percentage, rounded down.
    static func discount(_ campaign: CouponAPI.Campaign, fareCents: Int) -> Int {
        switch campaign.kind {
        case .amount: min(campaign.amountOffCents ?? 0, max(fareCents, 0))
        case .percent: max(fareCents, 0) * (campaign.percentOff ?? 0) / 100
        }
    }

    struct Books: Sendable {
        var persisted: Int
        var distinctUsers: Int
        var overLimitUsers: [String]
    }

    func books(campaign: String, perUserLimit: Int) async throws -> Books {
        try await db.read { db in
            let persisted = try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM claims WHERE campaign_id = ?", arguments: [campaign]) ?? 0
            let distinct = try Int.fetchOne(
                db, sql: "SELECT COUNT(DISTINCT user_id) FROM claims WHERE campaign_id = ?", arguments: [campaign]) ?? 0
            let over = try String.fetchAll(
                db,
                sql: "SELECT user_id FROM claims WHERE campaign_id = ? GROUP BY user_id HAVING COUNT(*) > ?",
                arguments: [campaign, perUserLimit])
            return Books(persisted: persisted, distinctUsers: distinct, overLimitUsers: over)
        }
    }

    static func campaign(_ row: Row) -> CouponAPI.Campaign {
        CouponAPI.Campaign(
            id: row["id"], name: row["name"], city: row["city"],
            kind: CouponAPI.DiscountKind(rawValue: row["kind"]) ?? .amount,
            amountOffCents: row["amount_off_cents"], percentOff: row["percent_off"],
            minimumFareCents: row["minimum_fare_cents"], stock: row["stock"], perUserLimit: row["per_user_limit"],
            startsAt: row["starts_at"], endsAt: row["ends_at"], createdAt: row["created_at"], remaining: nil,
            paused: (row["paused"] as Int?) == 1)
    }
}
