import Contracts
import Foundation
import HailKit
import Logging
import Synchronization

/// The campaigns this instance serves, with each one's books and pacing, kept in memory so that serving
/// an ad costs one Redis round trip (the user's caps) and no database read. Refreshed every second
/// from Redis (spend, impressions, clicks) and at once from SQLite when an admin changes a campaign.
final class AdCatalog: Sendable {
    struct Settings: Sendable {
        /// How long a served ad's tokens stay valid (`ad.token.seconds`, 600).
        var tokenSeconds: Double = 600
        /// Riders with fewer completed trips are `new` (`ad.segment.new.trips`, 3).
        var newBelow = 3
        /// Riders with at least this many are `frequent` (`ad.segment.frequent.trips`, 10).
        var frequentFrom = 10
        /// The share of requests served a random eligible campaign instead of the best one, so a new
        /// campaign's click rate gets measured (`ad.exploration.percent`, 10 %).
        var exploration = 0.1
        /// Seconds between pacing runs (`ad.pacing.interval.seconds`, 60).
        var pacingInterval: Double = 60
        /// How soon pacing brings spend back to the even line (`ad.pacing.horizon.seconds`, 900).
        var pacingHorizon: Double = 900
    }

    /// A campaign as this instance serves it.
    struct Live: Sendable {
        var campaign: AdAPI.Campaign
        var city: Cities.City
        var books = AdLedger.Books()
        var day: String
        var pacer = Pacer()
        var pacedAt: Double = 0

        var settings: AdAPI.NewCampaign { campaign.settings }

        /// What one impression and one click cost, in millicents.
        var impressionCharge: Int { settings.pricing == .cpm ? settings.bidCents : 0 }
        var clickCharge: Int { settings.pricing == .cpc ? settings.bidCents * 1000 : 0 }

        /// Whether the total budget has no room left for what it charges for.
        var isExhausted: Bool { books.spent + max(impressionCharge, clickCharge) > settings.totalBudgetCents * 1000 }

        /// Whether the budgets still have room for what it charges for.
        var hasBudget: Bool {
            !isExhausted && books.spentToday + max(impressionCharge, clickCharge) <= settings.dailyBudgetCents * 1000
        }

        /// The expected value of showing it, per thousand impressions, in cents: the bid for CPM; for
        /// CPC the bid times its click rate, estimated with a prior of 2 % (one click in fifty) that its
        /// own counts outweigh as they grow.
        var expectedValue: Double {
            switch settings.pricing {
            case .cpm: Double(settings.bidCents)
            case .cpc: Double(settings.bidCents) * 1000 * (Double(books.clicks) + 1) / (Double(books.impressions) + 50)
            }
        }
    }

    let store: AdStore
    let ledger: AdLedger
    let cities: Cities
    let tokens: AdTokens
    let counts: ServeCounts
    /// The shard of a split ad service this instance owns: the cities it serves, the campaigns it counts.
    let owner: Shard
    let settings: Settings
    let logger: Logger
    private let live = Mutex<[String: Live]>([:])

    init(store: AdStore, ledger: AdLedger, cities: Cities, tokens: AdTokens, counts: ServeCounts, settings: Settings, logger: Logger) {
        self.store = store
        self.owner = ledger.owner
        self.ledger = ledger
        self.cities = cities
        self.tokens = tokens
        self.counts = counts
        self.settings = settings
        self.logger = logger
    }

    /// Takes the campaigns from SQLite again (keeping the pacing state of those it had).
    func reload(now: Double = Date().timeIntervalSince1970) async throws {
        let campaigns = try await store.all()
        live.withLock { live in
            var next: [String: Live] = [:]
            for campaign in campaigns where campaign.state == .active || campaign.state == .paused {
                guard let city = cities.named(campaign.settings.targeting.city) else { continue }
                var entry = live[campaign.id] ?? Live(campaign: campaign, city: city, day: city.day(of: now).key)
                entry.campaign.state = campaign.state
                next[campaign.id] = entry
            }
            live = next
        }
    }

    /// The campaign with its books and pacing as served now; nil when this instance does not serve it.
    func current(_ id: String) -> Live? {
        live.withLock { $0[id] }
    }

    /// Every second: the books from Redis; a campaign past its end or out of total budget leaves service;
    /// pacing runs when due.
    func refresh(now: Double = Date().timeIntervalSince1970) async throws {
        let entries = live.withLock { live in live.values.map { ($0.campaign.id, $0.city.day(of: now).key) } }
        let books = try await ledger.books(entries.map { (id: $0.0, day: $0.1) })
        var finished: [(String, AdAPI.State)] = []
        live.withLock { live in
            for (index, (id, day)) in entries.enumerated() {
                guard var entry = live[id] else { continue }
                entry.books = books[index]
                entry.day = day
                if now >= entry.settings.endsAt {
                    finished.append((id, .ended))
                } else if entry.isExhausted {
                    finished.append((id, .exhausted))
                }
                if entry.settings.pacing ?? .even == .even, now - entry.pacedAt >= settings.pacingInterval {
                    let window = entry.city.day(of: now)
                    let start = max(window.start, entry.settings.startsAt)
                    let end = min(window.end, entry.settings.endsAt)
                    let index = entry.pacer.update(
                        now: now, spent: entry.books.spentToday, budget: entry.settings.dailyBudgetCents * 1000, start: start, end: end,
                        horizon: settings.pacingHorizon)
                    entry.pacedAt = now
                    if let index { counts.setPacingIndex(index, for: .init(campaign: id, at: now)) }
                }
                live[id] = entry
            }
        }
        for (id, state) in finished {
            _ = try await store.move(id, to: state, from: [.draft, .active, .paused], now: now)
            logger.notice("ad campaign finished", metadata: ["campaign": "\(id)", "state": "\(state.rawValue)"])
        }
        if !finished.isEmpty { try await reload(now: now) }
    }

    /// The ad for `placement` at `point` for `identity`, or nil when none fits. Counts, per campaign that
    /// runs there, the request and what became of it.
    func serve(placement: AdAPI.Placement, at point: GeoPoint, for identity: Identity, now: Double = Date().timeIntervalSince1970) async throws -> AdAPI.Ad? {
        guard let city = cities.city(at: point) else { return nil }
        // Another shard's city: its campaigns are not here, and an empty answer would hide the misrouting.
        if owner.isSplit {
            let cityOwner = AdAPI.shard(ofCity: city.name, count: owner.count)
            guard cityOwner == owner.index else {
                throw Problem.misdirected("\(city.name) is shard \(cityOwner)'s; this instance owns shard \(owner.index) of \(owner.count)")
            }
        }
        let running = live.withLock { live in
            live.values.filter {
                $0.campaign.state == .active && $0.city.name == city.name && $0.settings.placements.contains(placement)
                    && $0.settings.startsAt <= now && now < $0.settings.endsAt
            }
        }
        guard !running.isEmpty else { return nil }
        for entry in running { counts.add(.init(campaign: entry.campaign.id, at: now)) { $0.requests += 1 } }

        // Targeting and budget; the rider's trips are read only when a campaign asks for a segment.
        var trips: Int? = nil
        if identity.role == .rider, running.contains(where: { ($0.settings.targeting.segment ?? .any) != .any }) {
            trips = try await store.completedTrips(user: identity.userID)
        }
        let targeted = running.filter { entry in
            entry.hasBudget
                && entry.settings.targeting.matches(
                    point: point, time: now, in: city, completedTrips: trips, newBelow: settings.newBelow,
                    frequentFrom: settings.frequentFrom)
        }
        guard !targeted.isEmpty else { return nil }
        // The user's caps, in one round trip.
        let seen = try await ledger.seen(by: identity.userID, campaigns: targeted.map { (id: $0.campaign.id, day: $0.day) })
        var eligible: [Live] = []
        for (entry, count) in zip(targeted, seen) {
            if count >= entry.settings.frequencyCapPerDay {
                counts.add(.init(campaign: entry.campaign.id, at: now)) { $0.capped += 1 }
            } else {
                eligible.append(entry)
            }
        }
        // Pacing lets each through with its pass rate.
        var passing: [Live] = []
        for entry in eligible {
            let key = ServeCounts.Key(campaign: entry.campaign.id, at: now)
            let rate = entry.settings.pacing ?? .even == .even ? entry.pacer.passRate : 1
            if Double.random(in: 0..<1) < rate {
                passing.append(entry)
                counts.add(key) { $0.eligible += 1 }
            } else {
                counts.add(key) {
                    $0.eligible += 1
                    $0.throttled += 1
                }
            }
        }
        guard !passing.isEmpty else { return nil }
        let chosen =
            Double.random(in: 0..<1) < settings.exploration
            ? passing.randomElement()!
            : passing.max { $0.expectedValue < $1.expectedValue }!
        counts.add(.init(campaign: chosen.campaign.id, at: now)) { $0.served += 1 }
        let expiresAt = now + settings.tokenSeconds
        func token(_ kind: AdTokens.Kind) -> String {
            tokens.sign(.init(
                kind: kind, id: RandomID.uuid(), campaignID: chosen.campaign.id, userID: identity.userID, placement: placement,
                expiresAt: expiresAt))
        }
        return AdAPI.Ad(
            campaignID: chosen.campaign.id, placement: placement, creative: chosen.settings.creative,
            impressionToken: token(.impression), clickToken: token(.click), expiresAt: expiresAt)
    }

    /// Counts an impression or a click sent by `identity`, charging the campaign what it pays for it.
    func count(_ token: String, kind: AdTokens.Kind, for identity: Identity, now: Double = Date().timeIntervalSince1970) async throws -> AdAPI.Counted {
        let claims = try tokens.verify(token, kind: kind, userID: identity.userID, now: now)
        // Another shard's campaign counted here would be charged in Redis but stored in no file that has it.
        guard owner.owns(id: claims.campaignID) else {
            throw Problem.misdirected("Ad campaign \(claims.campaignID) is another shard's; this instance owns shard \(owner.index) of \(owner.count)")
        }
        var entry = current(claims.campaignID)
        if entry == nil, let campaign = try await store.campaign(id: claims.campaignID), let city = cities.named(campaign.settings.targeting.city) {
            // Ended or exhausted since it was served: still counted, within its budget.
            entry = Live(campaign: campaign, city: city, day: city.day(of: now).key)
        }
        guard let entry else { throw Problem.notFound("No ad campaign \(claims.campaignID)") }
        let charge = kind == .impression ? entry.impressionCharge : entry.clickCharge
        let outcome = try await ledger.count(claims, charge: charge, campaign: entry.settings, day: entry.city.day(of: now).key, now: now)
        if outcome == .duplicate { counts.add(.init(campaign: claims.campaignID, at: now)) { $0.duplicates += 1 } }
        return AdAPI.Counted(outcome: outcome.rawValue, campaignID: claims.campaignID, chargedMillicents: outcome == .counted ? charge : 0)
    }
}
