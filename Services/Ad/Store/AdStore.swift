import Contracts
import EventBus
import Foundation
import HailKit
import SQLiteKit

/// Ad campaigns, the impressions and clicks counted, the serving figures per hour, riders' trip counts
/// and conversions, in the ad service's own SQLite file.
struct AdStore: Sendable {
    let db: SQLiteStore

    /// How long after a click a coupon claim or a ride by the same user counts as its conversion.
    static let conversionWindow: Double = 1800

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-ads") { db in
            try db.execute(sql: """
                CREATE TABLE campaigns (
                    id TEXT PRIMARY KEY,
                    state TEXT NOT NULL CHECK (state IN ('draft', 'active', 'paused', 'ended', 'exhausted')),
                    settings TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    idempotency_key TEXT UNIQUE
                );
                CREATE TABLE ad_events (
                    token_id TEXT PRIMARY KEY,
                    kind TEXT NOT NULL CHECK (kind IN ('impression', 'click')),
                    campaign_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    placement TEXT NOT NULL,
                    charged_millicents INTEGER NOT NULL,
                    at REAL NOT NULL
                );
                CREATE INDEX ad_events_campaign ON ad_events(campaign_id, at);
                CREATE INDEX ad_events_clicks ON ad_events(user_id, kind, at);
                CREATE TABLE serve_hours (
                    campaign_id TEXT NOT NULL,
                    hour REAL NOT NULL,
                    requests INTEGER NOT NULL DEFAULT 0,
                    eligible INTEGER NOT NULL DEFAULT 0,
                    throttled INTEGER NOT NULL DEFAULT 0,
                    capped INTEGER NOT NULL DEFAULT 0,
                    served INTEGER NOT NULL DEFAULT 0,
                    pacing_index REAL,
                    PRIMARY KEY (campaign_id, hour)
                );
                CREATE TABLE rider_trips (
                    user_id TEXT PRIMARY KEY,
                    completed INTEGER NOT NULL
                );
                CREATE TABLE actions (
                    event_id TEXT PRIMARY KEY,
                    user_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    at REAL NOT NULL
                );
                CREATE INDEX actions_user ON actions(user_id, at);
                CREATE TABLE conversions (
                    click_token TEXT PRIMARY KEY,
                    action_event TEXT NOT NULL UNIQUE,
                    campaign_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    at REAL NOT NULL
                );
                CREATE INDEX conversions_campaign ON conversions(campaign_id, at);
                """)
        }
        ProcessedEvents.addMigrations(to: &migrations)
        migrations.add("v2-duplicates-per-hour") { db in
            try db.execute(sql: "ALTER TABLE serve_hours ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0")
        }
        // What a sharded ledger's recorder republishes onto the `ad` stream.
        Outbox.addMigrations(to: &migrations)
        return migrations
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Inserts the campaign (a draft), or returns the one an earlier request with the same key created.
    func create(_ campaign: AdAPI.Campaign, idempotencyKey: String?) async throws -> AdAPI.Campaign {
        let settings = String(decoding: try Self.encoder.encode(campaign.settings), as: UTF8.self)
        return try await db.write { db in
            if let idempotencyKey,
                let existing = try Row.fetchOne(db, sql: "SELECT * FROM campaigns WHERE idempotency_key = ?", arguments: [idempotencyKey])
            {
                let first = try Self.campaign(existing)
                guard first.settings == campaign.settings else {
                    throw Problem.idempotencyKeyReused("This key created campaign \(first.id) with other settings; use a new key for a new campaign")
                }
                return first
            }
            try db.execute(
                sql: "INSERT INTO campaigns (id, state, settings, created_at, updated_at, idempotency_key) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [campaign.id, campaign.state.rawValue, settings, campaign.createdAt, campaign.createdAt, idempotencyKey])
            return campaign
        }
    }

    func all() async throws -> [AdAPI.Campaign] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM campaigns ORDER BY created_at").map(Self.campaign)
        }
    }

    func campaign(id: String) async throws -> AdAPI.Campaign? {
        try await db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM campaigns WHERE id = ?", arguments: [id]).map(Self.campaign)
        }
    }

    /// Moves a campaign to `state` from one of `from` (a campaign already in `state` stays as it is);
    /// nil when there is no such campaign, a 409 problem when its state does not allow the move.
    func move(_ id: String, to state: AdAPI.State, from: Set<AdAPI.State>, now: Double) async throws -> AdAPI.Campaign? {
        try await db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM campaigns WHERE id = ?", arguments: [id]) else { return nil }
            var campaign = try Self.campaign(row)
            guard campaign.state != state else { return campaign }
            guard from.contains(campaign.state) else {
                throw Problem.conflict("campaign-\(campaign.state.rawValue)", "The campaign is \(campaign.state.rawValue); it cannot become \(state.rawValue)")
            }
            try db.execute(sql: "UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ?", arguments: [state.rawValue, now, id])
            campaign.state = state
            return campaign
        }
    }

    static func campaign(_ row: Row) throws -> AdAPI.Campaign {
        let settings = try JSONDecoder().decode(AdAPI.NewCampaign.self, from: Data((row["settings"] as String).utf8))
        return AdAPI.Campaign(
            id: row["id"], state: AdAPI.State(rawValue: row["state"]) ?? .paused, settings: settings, createdAt: row["created_at"])
    }

    // MARK: Counted impressions and clicks

    /// Stores a counted impression or click once, however often the stream delivers it; a click is then
    /// matched with a coupon claim or ride that followed it.
    func record(_ event: AdEvents.Counted, isClick: Bool, in db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO ad_events (token_id, kind, campaign_id, user_id, placement, charged_millicents, at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """
        ).execute(arguments: [
            event.tokenID, isClick ? "click" : "impression", event.campaignID, event.userID, event.placement, event.chargedMillicents,
            event.at,
        ])
        if isClick, db.changesCount == 1 { try attribute(user: event.userID, in: db) }
    }

    /// Notes a coupon claim or a ride ordered (`kind`) by `user`, once per event, and matches it with a
    /// click before it.
    func recordAction(eventID: String, user: String, kind: String, at: Double, in db: Database) throws {
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO actions (event_id, user_id, kind, at) VALUES (?, ?, ?, ?)")
            .execute(arguments: [eventID, user, kind, at])
        if db.changesCount == 1 { try attribute(user: user, in: db) }
    }

    /// Pairs `user`'s clicks with the actions that followed them within the window: each click converts
    /// once (a click, then a claim, then a ride is one conversion) and each action converts one click, the
    /// last one before it. Run whenever either side arrives, so the order the streams deliver them in does
    /// not matter, and running it again changes nothing.
    ///
    /// Statements are the connection's cached ones, and a user who never clicked an ad (most riders of a
    /// flash sale, whose thousand claims arrive in one burst) costs one probe of the clicks index: the
    /// burst's attribution was compiling three statements per claim on the cores the sale runs on.
    private func attribute(user: String, in db: Database) throws {
        let clicked = try Bool.fetchOne(
            db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM ad_events WHERE user_id = ? AND kind = 'click')"), arguments: [user])
        guard clicked == true else { return }
        let actions = try Row.fetchAll(
            db.cachedStatement(sql: """
                SELECT event_id, at FROM actions a WHERE user_id = ?
                AND NOT EXISTS (SELECT 1 FROM conversions c WHERE c.action_event = a.event_id) ORDER BY at
                """), arguments: [user])
        for action in actions {
            let at: Double = action["at"]
            guard let click = try Row.fetchOne(
                db.cachedStatement(sql: """
                    SELECT token_id, campaign_id FROM ad_events e WHERE user_id = ? AND kind = 'click' AND at <= ? AND at >= ?
                    AND NOT EXISTS (SELECT 1 FROM conversions c WHERE c.click_token = e.token_id) ORDER BY at DESC LIMIT 1
                    """), arguments: [user, at, at - Self.conversionWindow])
            else { continue }
            try db.cachedStatement(
                sql: "INSERT OR IGNORE INTO conversions (click_token, action_event, campaign_id, user_id, at) VALUES (?, ?, ?, ?, ?)"
            ).execute(arguments: [click["token_id"] as String, action["event_id"] as String, click["campaign_id"] as String, user, at])
        }
    }

    /// A ride the rider completed.
    func addCompletedTrip(user: String, in db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT INTO rider_trips (user_id, completed) VALUES (?, 1)
            ON CONFLICT(user_id) DO UPDATE SET completed = completed + 1
            """
        ).execute(arguments: [user])
    }

    func completedTrips(user: String) async throws -> Int {
        try await db.read { db in
            try Int.fetchOne(db, sql: "SELECT completed FROM rider_trips WHERE user_id = ?", arguments: [user]) ?? 0
        }
    }

    // MARK: Serving figures

    /// Adds the serving counts gathered since the last flush, and the pacing indexes computed.
    func add(_ counts: [ServeCounts.Key: ServeCounts.Figures], pacing: [ServeCounts.Key: Double]) async throws {
        guard !counts.isEmpty || !pacing.isEmpty else { return }
        try await db.write { db in
            let add = try db.cachedStatement(sql: """
                INSERT INTO serve_hours (campaign_id, hour, requests, eligible, throttled, capped, served, duplicates)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(campaign_id, hour) DO UPDATE SET requests = requests + excluded.requests,
                    eligible = eligible + excluded.eligible, throttled = throttled + excluded.throttled,
                    capped = capped + excluded.capped, served = served + excluded.served,
                    duplicates = duplicates + excluded.duplicates
                """)
            for (key, figures) in counts {
                try add.execute(arguments: [
                    key.campaign, key.hour, figures.requests, figures.eligible, figures.throttled, figures.capped, figures.served,
                    figures.duplicates,
                ])
            }
            let index = try db.cachedStatement(sql: """
                INSERT INTO serve_hours (campaign_id, hour, pacing_index) VALUES (?, ?, ?)
                ON CONFLICT(campaign_id, hour) DO UPDATE SET pacing_index = excluded.pacing_index
                """)
            for (key, value) in pacing where value.isFinite {
                try index.execute(arguments: [key.campaign, key.hour, value])
            }
        }
    }

    /// A campaign's figures per hour (seconds since 1970 at the hour's start), oldest first.
    func report(campaign: String) async throws -> [AdAPI.ReportHour] {
        try await db.read { db in
            var hours: [Double: AdAPI.ReportHour] = [:]
            func hour(_ start: Double) -> AdAPI.ReportHour { hours[start] ?? AdAPI.ReportHour(hour: start) }
            for row in try Row.fetchAll(db, sql: "SELECT * FROM serve_hours WHERE campaign_id = ?", arguments: [campaign]) {
                var figures = hour(row["hour"])
                figures.requests = row["requests"]
                figures.eligible = row["eligible"]
                figures.throttled = row["throttled"]
                figures.capped = row["capped"]
                figures.served = row["served"]
                figures.duplicates = row["duplicates"]
                figures.pacingIndex = row["pacing_index"]
                hours[figures.hour] = figures
            }
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT CAST(at / 3600 AS INTEGER) * 3600 AS hour, kind, COUNT(*) AS n, SUM(charged_millicents) AS spent
                    FROM ad_events WHERE campaign_id = ? GROUP BY 1, 2
                    """, arguments: [campaign])
            {
                var figures = hour(Double(row["hour"] as Int))
                if (row["kind"] as String) == "click" { figures.clicks += row["n"] } else { figures.impressions += row["n"] }
                figures.spentMillicents += row["spent"] as Int
                hours[figures.hour] = figures
            }
            for row in try Row.fetchAll(
                db,
                sql: "SELECT CAST(at / 3600 AS INTEGER) * 3600 AS hour, COUNT(*) AS n FROM conversions WHERE campaign_id = ? GROUP BY 1",
                arguments: [campaign])
            {
                var figures = hour(Double(row["hour"] as Int))
                figures.conversions = row["n"]
                hours[figures.hour] = figures
            }
            return hours.values.sorted { $0.hour < $1.hour }.map { figures in
                var figures = figures
                figures.clickRate = figures.impressions > 0 ? Double(figures.clicks) / Double(figures.impressions) : 0
                return figures
            }
        }
    }
}
