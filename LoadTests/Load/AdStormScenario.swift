import Contracts
import Foundation
import NIOCore
import Synchronization

/// Riders at the waiting screen asking for ads: each scheduled request is one rider's ad request; an ad
/// served is shown (its impression counted), tapped one time in ten, and one impression in ten is sent a
/// second time (an app retrying). Three advertisers compete: a kiosk paying per thousand impressions with
/// a budget that runs out during the run, a bank paying per click, and a café paying per thousand with
/// a cap of two impressions per rider a day. The audit reads the ad service's own books: no campaign
/// spent past its budget, nobody shown a campaign beyond its cap, each impression and click counted
/// once (the counts Redis answered = what the stream stored in SQLite), and the reports equal to what was
/// counted.
final class AdStormScenario: Scenario {
    let name = "ad-storm"
    let context: LoadContext
    let riderCount: Int

    /// One campaign of the storm: how it is set up, and what the riders were told was counted.
    struct Campaign: Sendable {
        var id = ""
        var name: String
        var pricing: String
        var bidCents: Int
        var budgetCents: Int
        var cap: Int
        var counted = 0
        var clicks = 0
        var duplicates = 0
        var charged = 0
        /// Impressions counted per rider.
        var seen: [String: Int] = [:]
    }

    private let state = Mutex<(riders: [(id: String, token: String)], campaigns: [String: Campaign])>(([], [:]))

    init(context: LoadContext, riders: Int) {
        self.context = context
        self.riderCount = riders
    }

    func prepare() async throws {
        let riders = try await context.accounts(riderCount, role: .rider, prefix: "load-ad-rider")
        let now = Date().timeIntervalSince1970
        var campaigns: [String: Campaign] = [:]
        for var campaign in [
            Campaign(name: "Kiosk", pricing: "cpm", bidCents: 2000, budgetCents: 300, cap: 1000),
            Campaign(name: "Bank", pricing: "cpc", bidCents: 30, budgetCents: 100_000, cap: 1000),
            Campaign(name: "Café", pricing: "cpm", bidCents: 500, budgetCents: 100_000, cap: 2),
        ] {
            let body = try JSONSerialization.data(withJSONObject: [
                "name": "\(campaign.name) \(context.runLabel)", "advertiser": campaign.name, "placements": ["rider.waiting"],
                "creative": ["title": campaign.name, "text": "Load test"], "targeting": ["city": "Berlin"], "pricing": campaign.pricing,
                "bidCents": campaign.bidCents, "dailyBudgetCents": campaign.budgetCents, "totalBudgetCents": campaign.budgetCents,
                "frequencyCapPerDay": campaign.cap, "pacing": "asap", "startsAt": now - 60, "endsAt": now + 3 * 3600,
            ])
            guard let created = await context.call(
                .POST, "/admin/ads/campaigns", token: context.admin, json: body, idempotencyKey: "\(context.runLabel)-\(campaign.name)"),
                created.status == 201, let id = created.json["id"] as? String
            else { throw LoadError("the ad campaign \(campaign.name) was not created") }
            guard await context.call(.POST, "/admin/ads/campaigns/\(id)/resume", token: context.admin)?.status == 200 else {
                throw LoadError("the ad campaign \(campaign.name) did not start")
            }
            campaign.id = id
            campaigns[id] = campaign
        }
        state.withLock { $0 = (riders, campaigns) }
    }

    /// The rider and the request for one ad, at a point around the centre.
    private func adRequest() -> (rider: (id: String, token: String), path: String) {
        let rider = state.withLock { $0.riders[Int.random(in: 0..<$0.riders.count)] }
        let lat = 52.52 + Double.random(in: -0.05...0.05)
        let lon = 13.405 + Double.random(in: -0.08...0.08)
        return (rider, "/ads?placement=rider.waiting&lat=\(lat)&lon=\(lon)")
    }

    /// What the app does with an ad served: the impression counted (one in ten sent twice, an app
    /// retrying), and one in ten tapped.
    private func counts(for reply: LoadContext.Reply?) -> (campaign: String, sends: [(path: String, token: String)])? {
        guard let reply, reply.status == 200 else { return nil }
        let ad = reply.json
        guard let campaign = ad["campaignID"] as? String, let impression = ad["impressionToken"] as? String,
            let click = ad["clickToken"] as? String
        else { return nil }
        var sends = [("/ads/impressions", impression)]
        if Int.random(in: 0..<10) == 0 { sends.append(("/ads/impressions", impression)) }
        if Int.random(in: 0..<10) == 0 { sends.append(("/ads/clicks", click)) }
        return (campaign, sends)
    }

    private func served(_ reply: LoadContext.Reply?) -> (endpoint: String, outcome: Outcome) {
        guard let reply, reply.status == 200 else {
            return ("GET /ads", LoadContext.outcome(reply, expected: [204], label: "none"))
        }
        return ("GET /ads", counts(for: reply) == nil ? .error("an ad without its tokens") : .ok("served"))
    }

    func request(_ index: Int, second: Int) async -> (endpoint: String, outcome: Outcome) {
        let (rider, path) = adRequest()
        let reply = await context.call(.GET, path, token: rider.token)
        if let (campaign, sends) = counts(for: reply) {
            for (path, token) in sends {
                await context.recorded("POST \(path)", second: second) {
                    let body = try? JSONSerialization.data(withJSONObject: ["token": token])
                    return self.counted(await context.call(.POST, path, token: rider.token, json: body), path: path, campaign: campaign, rider: rider.id)
                }
            }
        }
        return served(reply)
    }

    /// On the gateway lane's loop, without a task: the ad, then its counts one after another.
    func submit(_ index: Int, second: Int, on loop: any EventLoop, _ done: @escaping @Sendable (OpenLoop.Answer) -> Void) -> Bool {
        guard let lane = context.lane else { return false }
        let (rider, path) = adRequest()
        return context.send(lane.request(.GET, "/api/v1" + path, token: rider.token), on: loop) { reply in
            done(self.served(reply))
            guard let (campaign, sends) = self.counts(for: reply) else { return }
            self.send(sends[...], campaign: campaign, rider: rider, second: second, on: loop, lane: lane)
        }
    }

    private func send(
        _ sends: ArraySlice<(path: String, token: String)>, campaign: String, rider: (id: String, token: String), second: Int,
        on loop: any EventLoop, lane: GatewayLane
    ) {
        guard let (path, token) = sends.first else { return }
        // (A token is base64url and a dot: nothing in it needs escaping in JSON.)
        let body = Data((#"{"token":""# + token + #""}"#).utf8)
        let started = ContinuousClock.now
        _ = context.send(lane.request(.POST, "/api/v1" + path, token: rider.token, json: body), on: loop) { reply in
            let outcome = self.counted(reply, path: path, campaign: campaign, rider: rider.id)
            self.context.recorder.record(
                endpoint: "POST \(path)", second: second, latencyMicros: UInt64((ContinuousClock.now - started).secondsValue * 1e6),
                outcome: outcome, lateness: 0)
            self.send(sends.dropFirst(), campaign: campaign, rider: rider, second: second, on: loop, lane: lane)
        }
    }

    /// What the rider was told, kept for the audit.
    private func counted(_ reply: LoadContext.Reply?, path: String, campaign: String, rider: String) -> Outcome {
        guard let reply, reply.status == 200, let outcome = reply.json["outcome"] as? String else {
            return LoadContext.outcome(reply, expected: [], label: "counted")
        }
        let charged = reply.json["chargedMillicents"] as? Int ?? 0
        state.withLock { state in
            guard var books = state.campaigns[campaign] else { return }
            switch outcome {
            case "counted":
                books.charged += charged
                if path.hasSuffix("clicks") {
                    books.clicks += 1
                } else {
                    books.counted += 1
                    books.seen[rider, default: 0] += 1
                }
            case "duplicate": books.duplicates += 1
            default: break
            }
            state.campaigns[campaign] = books
        }
        return .ok(outcome)
    }

    func finish() async {
        // The last impressions and clicks are counted after their ad: let them land.
        try? await Task.sleep(for: .seconds(2))
    }

    func audit() async throws -> [AuditCheck] {
        let campaigns = state.withLock { Array($0.campaigns.values) }.sorted { $0.name < $1.name }
        var checks: [AuditCheck] = []
        for campaign in campaigns {
            // The stream drains into SQLite, and serving figures are stored every two seconds: wait for both.
            var report: [String: Any] = [:]
            let deadline = ContinuousClock.now + .seconds(60)
            repeat {
                guard let reply = await context.read("/admin/ads/campaigns/\(campaign.id)/report"), reply.status == 200 else {
                    throw LoadError("the ad report of \(campaign.name) did not answer")
                }
                report = reply.json
                if report["pendingOnStream"] as? Int == 0 { break }
                try await Task.sleep(for: .milliseconds(500))
            } while ContinuousClock.now < deadline
            let totals = report["totals"] as? [String: Any] ?? [:]
            let redisSpent = (report["campaign"] as? [String: Any])?["spentMillicents"] as? Int ?? -1
            let storedSpent = totals["spentMillicents"] as? Int ?? -1
            let impressions = totals["impressions"] as? Int ?? -1
            let clicks = totals["clicks"] as? Int ?? -1
            let budget = campaign.budgetCents * 1000
            let overCap = campaign.seen.values.filter { $0 > campaign.cap }.count
            checks += [
                AuditCheck(
                    name: "\(campaign.name): spend ≤ budget", passed: redisSpent >= 0 && redisSpent <= budget && storedSpent <= budget,
                    detail: "\(redisSpent) millicents in Redis, \(storedSpent) stored, budget \(budget)"),
                AuditCheck(
                    name: "\(campaign.name): nobody over the cap of \(campaign.cap)", passed: overCap == 0,
                    detail: overCap == 0 ? "none" : "\(overCap) riders"),
                AuditCheck(
                    name: "\(campaign.name): each impression and click counted once",
                    passed: report["pendingOnStream"] as? Int == 0 && impressions == campaign.counted && clicks == campaign.clicks,
                    detail: "riders told \(campaign.counted) impressions and \(campaign.clicks) clicks counted; stored \(impressions) and \(clicks); "
                        + "\(report["pendingOnStream"] ?? "?") on the stream"),
                AuditCheck(
                    name: "\(campaign.name): the report equals what was counted",
                    passed: storedSpent == campaign.charged && redisSpent == campaign.charged
                        && totals["duplicates"] as? Int == campaign.duplicates,
                    detail: "charged \(campaign.charged) millicents, report \(storedSpent), Redis \(redisSpent); "
                        + "\(campaign.duplicates) duplicates answered, \(totals["duplicates"] ?? "?") in the report"),
            ]
        }
        return checks
    }

    func figures() -> [String: [String: Double]] { [:] }
}
