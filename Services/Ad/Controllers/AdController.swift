import Contracts
import Foundation
import HailKit
import HTTPTypes
import Hummingbird

/// The ad service's HTTP API (`AdAPI`).
struct AdController: Sendable {
    let store: AdStore
    let catalog: AdCatalog
    let cities: Cities
    /// The shard of a split ad service this instance owns: its new campaigns' ids name it, and only
    /// campaigns in its cities are made here.
    var shard = Shard(index: 0, of: 1)

    func register(on router: some RouterMethods<HailRequestContext>) {
        router.on(AdAPI.createCampaign) { body, request, context in
            _ = try context.requireRole(.admin)
            try validate(body)
            let owner = AdAPI.shard(ofCity: body.targeting.city, count: shard.count)
            guard owner == shard.index else {
                throw Problem.misdirected(
                    "\(body.targeting.city)'s campaigns are shard \(owner)'s; this instance owns shard \(shard.index) of \(shard.count)")
            }
            let now = Date().timeIntervalSince1970
            let key = try HailHeaders.idempotencyKey(in: request.headers)
            let campaign = try await store.create(
                AdAPI.Campaign(id: shard.id(RandomID.uuid()), state: .draft, settings: body, createdAt: now), idempotencyKey: key)
            context.logger.info("ad campaign created", metadata: ["campaign": "\(campaign.id)"])
            return campaign
        }
        router.on(AdAPI.campaigns) { _, _, context in
            // Admins, and services (the command centre's budget alerts).
            _ = try context.requireRole(.admin, .service)
            var campaigns: [AdAPI.Campaign] = []
            for campaign in try await store.all() { campaigns.append(try await withBooks(campaign)) }
            return AdAPI.CampaignList(campaigns: campaigns)
        }
        router.on(AdAPI.campaign) { _, _, context in
            _ = try context.requireRole(.admin)
            return try await withBooks(try await campaign(context))
        }
        router.on(AdAPI.pause) { _, _, context in
            try await move(context, to: .paused, from: [.active])
        }
        router.on(AdAPI.resume) { _, _, context in
            try await move(context, to: .active, from: [.draft, .paused])
        }
        router.on(AdAPI.end) { _, _, context in
            try await move(context, to: .ended, from: [.draft, .active, .paused])
        }
        router.on(AdAPI.report) { _, _, context in
            _ = try context.requireRole(.admin)
            let (campaign, books) = try await booked(try await campaign(context))
            let hours = try await store.report(campaign: campaign.id)
            var totals = AdAPI.ReportHour(hour: hours.first?.hour ?? 0)
            for hour in hours {
                totals.requests += hour.requests
                totals.eligible += hour.eligible
                totals.throttled += hour.throttled
                totals.capped += hour.capped
                totals.served += hour.served
                totals.impressions += hour.impressions
                totals.clicks += hour.clicks
                totals.conversions += hour.conversions
                totals.spentMillicents += hour.spentMillicents
            }
            totals.clickRate = totals.impressions > 0 ? Double(totals.clicks) / Double(totals.impressions) : 0
            totals.duplicates = books.duplicates
            totals.pacingIndex = hours.last?.pacingIndex
            let pending = max(0, books.impressions + books.clicks - totals.impressions - totals.clicks)
            return AdAPI.Report(campaign: campaign, hours: hours, totals: totals, pendingOnStream: pending)
        }
        router.on(RouterPath(AdAPI.serve.path), method: AdAPI.serve.method) { request, context in
            let identity = try context.requireRole(.rider, .driver)
            let query = request.uri.queryParameters
            guard let name = query.get("placement") else { throw Problem.invalidField("placement", "is required: \(Self.placementNames)") }
            guard let placement = AdAPI.Placement(rawValue: name) else {
                throw Problem.invalidField("placement", "must be one of \(Self.placementNames)")
            }
            guard placement.audience == identity.role else {
                throw Problem.invalidField("placement", "\(placement.rawValue) is shown to \(placement.audience.rawValue)s")
            }
            guard let lat = query.get("lat").flatMap(Double.init), Bounds.latitude.contains(lat) else {
                throw Problem.invalidField("lat", "is required, in -90…90")
            }
            guard let lon = query.get("lon").flatMap(Double.init), Bounds.longitude.contains(lon) else {
                throw Problem.invalidField("lon", "is required, in -180…180")
            }
            guard let ad = try await catalog.serve(placement: placement, at: GeoPoint(lat: lat, lon: lon), for: identity) else {
                return Response(status: .noContent)
            }
            return try JSONBody.response(ad, status: .ok)
        }
        router.on(AdAPI.impression) { body, _, context in
            try await catalog.count(body.token, kind: .impression, for: try context.requireRole(.rider, .driver))
        }
        router.on(AdAPI.click) { body, _, context in
            try await catalog.count(body.token, kind: .click, for: try context.requireRole(.rider, .driver))
        }
    }

    static let placementNames = AdAPI.Placement.allCases.map(\.rawValue).joined(separator: ", ")

    private func campaign(_ context: HailRequestContext) async throws -> AdAPI.Campaign {
        let id = try context.parameters.require("id")
        guard let campaign = try await store.campaign(id: id) else { throw Problem.notFound("No ad campaign \(id)") }
        return campaign
    }

    /// The campaign with what Redis says it spent, and the pass rate pacing gives it when it is in service.
    private func withBooks(_ campaign: AdAPI.Campaign) async throws -> AdAPI.Campaign {
        try await booked(campaign).campaign
    }

    /// `withBooks`, and the books it read.
    private func booked(_ campaign: AdAPI.Campaign) async throws -> (campaign: AdAPI.Campaign, books: AdLedger.Books) {
        var campaign = campaign
        let day = cities.named(campaign.settings.targeting.city)?.day(of: Date().timeIntervalSince1970).key ?? "-"
        let books = try await catalog.ledger.books([(id: campaign.id, day: day)]).first ?? AdLedger.Books()
        campaign.spentMillicents = books.spent
        campaign.spentTodayMillicents = books.spentToday
        if let live = catalog.current(campaign.id) {
            campaign.passRate = campaign.settings.pacing ?? .even == .even ? live.pacer.passRate : 1
        }
        return (campaign, books)
    }

    /// Pause, resume or end: stored, then served accordingly at once.
    private func move(_ context: HailRequestContext, to state: AdAPI.State, from: Set<AdAPI.State>) async throws -> AdAPI.Campaign {
        _ = try context.requireRole(.admin)
        let id = try context.parameters.require("id")
        guard let campaign = try await store.move(id, to: state, from: from, now: Date().timeIntervalSince1970) else {
            throw Problem.notFound("No ad campaign \(id)")
        }
        try await catalog.reload()
        context.logger.info("ad campaign moved", metadata: ["campaign": "\(id)", "state": "\(state.rawValue)"])
        return try await withBooks(campaign)
    }

    /// Every number and name of a new campaign within range, each refusal naming its field.
    func validate(_ body: AdAPI.NewCampaign) throws {
        func text(_ value: String, _ field: String, max: Int) throws {
            guard !value.trimmingCharacters(in: .whitespaces).isEmpty, value.count <= max else {
                throw Problem.invalidField(field, "must be 1 to \(max) characters")
            }
        }
        try text(body.name, "name", max: 200)
        try text(body.advertiser, "advertiser", max: 200)
        try text(body.creative.title, "creative.title", max: 100)
        try text(body.creative.text, "creative.text", max: 500)
        if let coupon = body.creative.couponCampaignID { try text(coupon, "creative.couponCampaignID", max: 200) }
        guard !body.placements.isEmpty, Set(body.placements).count == body.placements.count else {
            throw Problem.invalidField("placements", "must name one or more placements, each once: \(Self.placementNames)")
        }
        guard cities.named(body.targeting.city) != nil else {
            throw Problem.invalidField("targeting.city", "must be one of \(cities.all.map(\.name).joined(separator: ", "))")
        }
        if let area = body.targeting.area {
            guard Bounds.latitude.contains(area.lat), Bounds.longitude.contains(area.lon) else {
                throw Problem.invalidField("targeting.area", "needs lat in -90…90 and lon in -180…180")
            }
            guard area.radiusMeters.isFinite, (1...500_000).contains(area.radiusMeters) else {
                throw Problem.invalidField("targeting.area.radiusMeters", "must be 1 to 500000")
            }
        }
        if let hours = body.targeting.hours, hours.contains(where: { !(0...23).contains($0) }) || hours.count > 24 {
            throw Problem.invalidField("targeting.hours", "must be hours of the day, 0 to 23")
        }
        if let days = body.targeting.days, days.contains(where: { !(1...7).contains($0) }) || days.count > 7 {
            throw Problem.invalidField("targeting.days", "must be days of the week, 1 (Monday) to 7 (Sunday)")
        }
        guard (1...10_000_000).contains(body.bidCents) else { throw Problem.invalidField("bidCents", "must be 1 to 10000000") }
        let budgets = 1...1_000_000_000_000
        guard budgets.contains(body.dailyBudgetCents) else { throw Problem.invalidField("dailyBudgetCents", "must be 1 to 10^12") }
        guard budgets.contains(body.totalBudgetCents) else { throw Problem.invalidField("totalBudgetCents", "must be 1 to 10^12") }
        guard (1...10_000).contains(body.frequencyCapPerDay) else {
            throw Problem.invalidField("frequencyCapPerDay", "must be 1 to 10000")
        }
        guard Bounds.isEpochSeconds(body.startsAt), Bounds.isEpochSeconds(body.endsAt), body.startsAt < body.endsAt else {
            throw Problem.invalidField("endsAt", "startsAt and endsAt must be times in seconds since 1970, startsAt first")
        }
    }
}
