import Contracts
import Foundation
import HailKit
import Logging
import RedisKit

/// The alert rules the command centre evaluates itself, on the platform's own figures rather than on
/// Prometheus's series, every `interval`, into the same alerts book (source `domain`):
///
/// - `MatchRateLow`: over the last `window`, at least `minimumOrders` orders and fewer than `matchRate`
///   of them assigned (analytics);
/// - `ConsumerLagging`: a consumer group more than `lagEntries` entries behind its stream (Redis's own
///   count, `XINFO GROUPS`), per stream and group;
/// - `CouponCampaignSoldOut`: a running coupon campaign with no stock left, per campaign (coupon);
/// - `AdBudgetExhausted`: an ad campaign whose total budget is spent, per campaign (ad);
/// - `AnomalousTrips`: trips flagged by analytics' path rules, completed within the last `window`.
///
/// Each rule reads its own source; a rule whose source cannot be read this time changes nothing in the
/// book (its alerts neither fire nor resolve on a missing answer).
struct DomainRules: Sendable {
    struct Settings: Sendable {
        var window: Double = 600
        var minimumOrders = 10
        var matchRate = 0.5
        var lagEntries = 10_000
        /// The streams whose consumer groups are watched.
        var streams = ["order", "payment", "coupon.claims", "ad", "driver.location", "order.quotes"]
    }

    let store: CommandStore
    let clients: ServiceClient
    let credentials: ServiceCredentials
    let redis: RedisClient
    let settings: Settings

    typealias Observed = CommandStore.Observed

    static func observed(_ name: String, severity: String, summary: String, labels: [String: String] = [:]) -> Observed {
        var all = labels
        all["alertname"] = name
        all["severity"] = severity
        return Observed(
            fingerprint: PrometheusReader.fingerprint(all), name: name, source: "domain", severity: severity, summary: summary, labels: all)
    }

    /// Evaluates every rule once and records what fired and resolved.
    @discardableResult
    func check(now: Double = Date().timeIntervalSince1970, logger: Logger) async -> CommandStore.Transitions {
        var all = CommandStore.Transitions()
        let rules: [(String, @Sendable () async throws -> [Observed])] = [
            ("MatchRateLow", { try await matchRate(now: now) }),
            ("ConsumerLagging", { try await consumerLag() }),
            ("CouponCampaignSoldOut", { try await soldOut() }),
            ("AdBudgetExhausted", { try await adBudgets() }),
            ("AnomalousTrips", { try await anomalies(now: now) }),
        ]
        for (name, evaluate) in rules {
            do {
                let firing = try await evaluate()
                let transitions = try await store.observe(firing, source: "domain", names: [name], now: now)
                transitions.log(source: "domain", to: logger)
                all.fired += transitions.fired
                all.resolved += transitions.resolved
            } catch {
                logger.debug("domain rule not evaluated", metadata: ["rule": "\(name)", "error": "\(error)"])
            }
        }
        return all
    }

    private func matchRate(now: Double) async throws -> [Observed] {
        let kpis = try await clients.call(
            AnalyticsAPI.kpis, NoContent(), query: ["from": String(Int(now - settings.window)), "to": String(Int(now)), "step": "hour"],
            headers: try await credentials.headers(for: AnalyticsAPI.service), context: .none)
        let total = kpis.total
        guard total.orders >= settings.minimumOrders, let rate = total.matchRate, rate < settings.matchRate else { return [] }
        return [Self.observed(
            "MatchRateLow", severity: "warning",
            summary: "\(Int((rate * 100).rounded())) % of \(total.orders) orders assigned over the last \(Int(settings.window / 60)) minutes")]
    }

    private func consumerLag() async throws -> [Observed] {
        var firing: [Observed] = []
        for stream in settings.streams {
            let reply: RESPValue
            do {
                reply = try await redis.send("XINFO", "GROUPS", "events:\(stream)")
            } catch let error as RedisError where error.serverErrorPrefix != nil && error.message.contains("no such key") {
                continue
            }
            for group in reply.array ?? [] {
                let fields = group.array ?? []
                var info: [String: RESPValue] = [:]
                for index in stride(from: 0, to: fields.count - 1, by: 2) {
                    if let key = fields[index].string { info[key] = fields[index + 1] }
                }
                guard let name = info["name"]?.string, let lag = info["lag"]?.int ?? info["pending"]?.int, lag > settings.lagEntries else {
                    continue
                }
                firing.append(Self.observed(
                    "ConsumerLagging", severity: "warning", summary: "\(name) is \(lag) entries behind \(stream)",
                    labels: ["stream": stream, "group": name]))
            }
        }
        return firing
    }

    private func soldOut() async throws -> [Observed] {
        // A split coupon service lists each shard's own campaigns.
        let lists = try await clients.callEveryShard(
            CouponAPI.campaigns, NoContent(), headers: try await credentials.headers(for: CouponAPI.service), context: .none)
        return CouponAPI.CampaignList.merged(lists).campaigns.filter { $0.remaining == 0 }.map { campaign in
            Self.observed(
                "CouponCampaignSoldOut", severity: "info", summary: "\(campaign.name): all \(campaign.stock) coupons claimed",
                labels: ["campaign": campaign.id])
        }
    }

    private func adBudgets() async throws -> [Observed] {
        // A split ad service lists each shard's own campaigns (the cities it owns).
        let lists = try await clients.callEveryShard(
            AdAPI.campaigns, NoContent(), headers: try await credentials.headers(for: AdAPI.service), context: .none)
        return AdAPI.CampaignList.merged(lists).campaigns.filter { $0.state == .exhausted }.map { campaign in
            Self.observed(
                "AdBudgetExhausted", severity: "info", summary: "\(campaign.settings.name) (\(campaign.settings.advertiser)): total budget spent",
                labels: ["campaign": campaign.id])
        }
    }

    private func anomalies(now: Double) async throws -> [Observed] {
        let list = try await clients.call(
            AnalyticsAPI.anomalies, NoContent(), query: ["from": String(Int(now - settings.window)), "to": String(Int(now))],
            headers: try await credentials.headers(for: AnalyticsAPI.service), context: .none)
        guard !list.trips.isEmpty else { return [] }
        return [Self.observed(
            "AnomalousTrips", severity: "warning",
            summary: "\(list.trips.count) trips flagged by the path rules in the last \(Int(settings.window / 60)) minutes")]
    }

    func periodic(every interval: Duration, logger: Logger) -> PeriodicWork {
        PeriodicWork("domain-rules", every: interval, maxBackoff: .seconds(30), logger: logger) {
            await self.check(logger: logger)
        }
    }
}
