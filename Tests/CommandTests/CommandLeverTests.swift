@testable import Ad
@testable import Command
import Contracts
@testable import Coupon
import Foundation
@testable import Gateway
import HailKit
import HailKitTesting
import NIOHTTP1
@testable import Order
import RedisKit
@testable import Settlement
import Testing

/// The command centre behind a real gateway, with the ad, order and settlement services its levers move,
/// found through the test run's etcd; an admin with a token signed as login signs them.
@Suite("the command centre's levers and audit log", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"))
struct CommandLeverTests {
    struct Stack: Sendable {
        let gateway: String
        let adminToken: String
        let otherAdmin: String

        func call(_ method: HTTPMethod, _ path: String, token: String? = nil, json: Any? = nil, key: String? = nil) async throws -> TestResponse {
            var headers = ["Authorization": "Bearer \(token ?? adminToken)"]
            if let key { headers["Idempotency-Key"] = key }
            return try await testRequest(method, gateway + "/api/v1" + path, json: json, headers: headers)
        }
    }

    /// The stream whose consumer group the command centre's lag rule watches here.
    static let lagStream = TestEnvironment.unique("lagging")

    static func run(_ body: @Sendable (Stack) async throws -> Void) async throws {
        let prefix = "/" + TestEnvironment.unique("command") + "/"
        let ad = try await Ad.buildApplication(reader: try .testing([
            "discovery.prefix": prefix, "ad.redis.prefix": TestEnvironment.unique("ad"), "ad.events.stream": TestEnvironment.unique("adev"),
            "ad.coupon.stream": TestEnvironment.unique("claims"), "ad.order.stream": TestEnvironment.unique("orders"),
            "ad.refresh.ms": "100", "ad.counts.flush.ms": "100", "ad.token.key": "ad-token-key-for-tests-only-0123456789",
        ], service: "ad"))
        let order = try await Order.buildApplication(reader: try .testing([
            "discovery.prefix": prefix, "order.surge.key": TestEnvironment.unique("surge"),
        ], service: "order"))
        let couponPrefix = TestEnvironment.unique("coupon")
        let coupon = try await Coupon.buildApplication(reader: try .testing([
            "discovery.prefix": prefix, "coupon.redis.prefix": couponPrefix, "coupon.claims.stream": "\(couponPrefix).claims",
        ], service: "coupon"))
        let settlement = try await Settlement.buildApplication(reader: try .testing([
            "discovery.prefix": prefix, "settlement.schedule.seconds": "0",
        ], service: "settlement"))
        let command = try await Command.buildApplication(reader: try .testing([
            "discovery.prefix": prefix, "command.rules.check.ms": "500", "command.rules.lag.entries": "3", "command.rules.streams": lagStream,
        ], service: "command"))
        let gateway = try await Gateway.buildApplication(reader: try .testing(
            ["discovery.prefix": prefix, "client.discovery.cache.ms": "0", "gateway.rate.prefix": TestEnvironment.unique("rl"), "gateway.rate.limit": "100000"],
            service: "gateway"))
        let admin = try await TestKeys.userToken("admin-\(UUID().uuidString.prefix(8))", role: .admin)
        let other = try await TestKeys.userToken("admin-\(UUID().uuidString.prefix(8))", role: .admin)
        try await withRunningService(ad) { _ in
          try await withRunningService(coupon) { _ in
            try await withRunningService(order) { _ in
                try await withRunningService(settlement) { _ in
                    try await withRunningService(command) { _ in
                        try await withRunningService(gateway) { base in
                            let stack = Stack(gateway: base, adminToken: admin, otherAdmin: other)
                            // The gateway routes once every registration is in etcd.
                            for _ in 0..<100 {
                                let probes = [
                                    try await stack.call(.GET, "/admin/command/audit").status,
                                    try await stack.call(.GET, "/admin/ads/campaigns").status,
                                    try await stack.call(.GET, "/admin/settlements").status,
                                    try await stack.call(.GET, "/coupons/campaigns").status,
                                    try await stack.call(.GET, "/admin/surge").status,
                                ]
                                if probes.allSatisfy({ $0 == 200 }) { break }
                                try await Task.sleep(for: .milliseconds(50))
                            }
                            try await body(stack)
                        }
                    }
                }
            }
          }
        }
    }

    @Test("pausing a coupon campaign from the command centre refuses its claims until it is resumed; both audited with before and after")
    func couponCampaignLever() async throws {
        try await Self.run { stack in
            let now = Date().timeIntervalSince1970
            let created = try await stack.call(.POST, "/admin/coupons/campaigns", json: [
                "name": "Rush hour 3 off", "city": "Berlin", "kind": "amount", "amountOffCents": 300, "minimumFareCents": 0,
                "stock": 50, "perUserLimit": 1, "startsAt": now - 5, "endsAt": now + 3600,
            ] as [String: Any])
            #expect(created.status == 201, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            let riders = [
                try await TestKeys.userToken("rider-\(UUID().uuidString.prefix(8))", role: .rider),
                try await TestKeys.userToken("rider-\(UUID().uuidString.prefix(8))", role: .rider),
            ]
            #expect(try await stack.call(.POST, "/coupons/campaigns/\(id)/claim", token: riders[0]).status == 201)

            let key = UUID().uuidString
            let paused = try await stack.call(.POST, "/admin/command/levers/coupon-campaigns/\(id)/pause", key: key)
            #expect(paused.status == 200, "\(paused.text)")
            #expect(paused.json["action"] as? String == "coupon-campaign.pause")
            #expect(paused.json["target"] as? String == "Rush hour 3 off (\(id))")
            #expect(paused.json["before"] as? [String: String] == ["claims": "open"])
            #expect(paused.json["after"] as? [String: String] == ["claims": "paused", "remaining": "49"])
            let refused = try await stack.call(.POST, "/coupons/campaigns/\(id)/claim", token: riders[1])
            #expect(refused.status == 409 && refused.json["type"] as? String == "urn:hailstorm:problem:campaign-paused", "\(refused.text)")
            let again = try await stack.call(.POST, "/admin/command/levers/coupon-campaigns/\(id)/pause", key: key)
            #expect(again.json["id"] as? Int == paused.json["id"] as? Int, "a retry answers the first entry")

            let resumed = try await stack.call(.POST, "/admin/command/levers/coupon-campaigns/\(id)/resume", token: stack.otherAdmin)
            #expect(resumed.json["before"] as? [String: String] == ["claims": "paused"])
            #expect(resumed.json["after"] as? [String: String] == ["claims": "open", "remaining": "49"])
            #expect(try await stack.call(.POST, "/coupons/campaigns/\(id)/claim", token: riders[1]).status == 201)

            let missing = try await stack.call(.POST, "/admin/command/levers/coupon-campaigns/no-such-campaign/pause")
            #expect(missing.status == 404, "\(missing.text)")
            #expect(try await stack.call(.POST, "/admin/command/levers/coupon-campaigns/\(id)/pause", token: riders[0]).status == 403)
            let entries = try await stack.call(.GET, "/admin/command/audit").json["entries"] as? [[String: Any]] ?? []
            #expect(entries.map { $0["action"] as? String } == ["coupon-campaign.resume", "coupon-campaign.pause"])
        }
    }

    @Test("pausing an ad campaign from the command centre stops the ad API serving it; the audit log holds who, what, before and after")
    func adCampaignLever() async throws {
        try await Self.run { stack in
            let now = Date().timeIntervalSince1970
            let created = try await stack.call(.POST, "/admin/ads/campaigns", json: [
                "name": "Late-night rides", "advertiser": "Kiosk 24", "placements": ["rider.waiting"],
                "creative": ["title": "Cold drinks", "text": "At the next corner"], "targeting": ["city": "Berlin"],
                "pricing": "cpm", "bidCents": 1000, "dailyBudgetCents": 100_000, "totalBudgetCents": 100_000,
                "frequencyCapPerDay": 1000, "pacing": "asap", "startsAt": now - 60, "endsAt": now + 3600,
            ] as [String: Any], key: UUID().uuidString)
            #expect(created.status == 201, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            #expect(try await stack.call(.POST, "/admin/ads/campaigns/\(id)/resume").json["state"] as? String == "active")
            let rider = try await TestKeys.userToken("rider-\(UUID().uuidString.prefix(8))", role: .rider)
            func served() async throws -> Bool {
                let answer = try await stack.call(.GET, "/ads?placement=rider.waiting&lat=52.52&lon=13.405", token: rider)
                return answer.status == 200 && answer.json["campaignID"] as? String == id
            }
            var serving = false
            for _ in 0..<50 where !serving {
                serving = try await served()
                if !serving { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(serving, "the running campaign is served")

            let key = UUID().uuidString
            let paused = try await stack.call(.POST, "/admin/command/levers/ad-campaigns/\(id)/pause", key: key)
            #expect(paused.status == 200, "\(paused.text)")
            #expect(paused.json["action"] as? String == "ad-campaign.pause")
            #expect(paused.json["target"] as? String == id)
            #expect(paused.json["before"] as? [String: String] == ["state": "active"])
            #expect(paused.json["after"] as? [String: String] == ["state": "paused"])
            #expect((paused.json["actor"] as? String)?.hasPrefix("admin-") == true)
            #expect(try await stack.call(.GET, "/admin/ads/campaigns/\(id)").json["state"] as? String == "paused")
            // The ad service drops a paused campaign at its next refresh (100 ms here).
            var stillServed = true
            for _ in 0..<50 where stillServed {
                try await Task.sleep(for: .milliseconds(100))
                stillServed = try await served()
            }
            #expect(!stillServed, "a paused campaign is no longer served")

            // The same request again (a retry): the first entry, not a second action.
            let again = try await stack.call(.POST, "/admin/command/levers/ad-campaigns/\(id)/pause", key: key)
            #expect(again.json["id"] as? Int == paused.json["id"] as? Int)
            let resumed = try await stack.call(.POST, "/admin/command/levers/ad-campaigns/\(id)/resume", token: stack.otherAdmin)
            #expect(resumed.json["before"] as? [String: String] == ["state": "paused"])
            #expect(resumed.json["after"] as? [String: String] == ["state": "active"])

            let audit = try await stack.call(.GET, "/admin/command/audit?limit=10")
            let entries = audit.json["entries"] as? [[String: Any]] ?? []
            #expect(entries.map { $0["action"] as? String } == ["ad-campaign.resume", "ad-campaign.pause"], "newest first: \(audit.text)")
            #expect(entries.first?["actor"] as? String != entries.last?["actor"] as? String, "each entry names its own operator")

            // Refused without acting: another role, a campaign that does not exist.
            let forbidden = try await stack.call(.POST, "/admin/command/levers/ad-campaigns/\(id)/pause", token: rider)
            #expect(forbidden.status == 403)
            let missing = try await stack.call(.POST, "/admin/command/levers/ad-campaigns/no-such-campaign/pause")
            #expect(missing.status == 404, "\(missing.text)")
            #expect(missing.header("content-type")?.hasPrefix("application/problem+json") == true)
            #expect((try await stack.call(.GET, "/admin/command/audit").json["entries"] as? [Any])?.count == 2, "refusals are not actions")
        }
    }

    @Test("a consumer group falling behind its stream fires the command centre's own ConsumerLagging alert; catching up resolves it")
    func consumerLag() async throws {
        try await Self.run { stack in
            let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort))
            let key = "events:\(Self.lagStream)"
            _ = try await redis.send("XGROUP", "CREATE", key, "readers", "$", "MKSTREAM")
            func booked() async throws -> [String: Any]? {
                let alerts = try await stack.call(.GET, "/admin/command/alerts").json["alerts"] as? [[String: Any]] ?? []
                return alerts.first { $0["name"] as? String == "ConsumerLagging" && ($0["labels"] as? [String: String])?["stream"] == Self.lagStream }
            }
            for index in 0..<3 { _ = try await redis.send("XADD", key, "*", "n", String(index)) }
            try await Task.sleep(for: .seconds(1.5))
            #expect(try await booked() == nil, "three entries behind is within the limit of three")
            _ = try await redis.send("XADD", key, "*", "n", "3")
            var alert: [String: Any]? = nil
            for _ in 0..<40 where alert?["state"] as? String != "firing" {
                try await Task.sleep(for: .milliseconds(100))
                alert = try await booked()
            }
            #expect(alert?["state"] as? String == "firing", "\(alert ?? [:])")
            #expect(alert?["source"] as? String == "domain")
            #expect((alert?["labels"] as? [String: String])?["group"] == "readers")
            _ = try await redis.send("XGROUP", "SETID", key, "readers", "$")
            for _ in 0..<40 where alert?["state"] as? String != "resolved" {
                try await Task.sleep(for: .milliseconds(100))
                alert = try await booked()
            }
            #expect(alert?["state"] as? String == "resolved", "\(alert ?? [:])")
            _ = try await redis.send("DEL", key)
            await redis.shutdown()
        }
    }

    @Test("surge and settlement levers: before and after as the owning service answered; a retried settlement run pays nothing twice")
    func surgeAndSettlement() async throws {
        try await Self.run { stack in
            let point: [String: Any] = ["lat": 52.5200, "lon": 13.4050]
            let first = try await stack.call(.PUT, "/admin/command/levers/surge", json: ["at": point, "factor": 1.8] as [String: Any])
            #expect(first.status == 200, "\(first.text)")
            #expect(first.json["before"] as? [String: String] == ["factor": "1.00"])
            #expect(first.json["after"] as? [String: String] == ["factor": "1.80"])
            let second = try await stack.call(.PUT, "/admin/command/levers/surge", json: ["at": point, "factor": 2.5] as [String: Any])
            #expect(second.json["before"] as? [String: String] == ["factor": "1.80"], "what the first lever left")
            #expect(second.json["target"] as? String == first.json["target"] as? String, "the same cell")
            // The map's surge layer: order lists the cell with its factor and bounds around the point.
            let cells = try await stack.call(.GET, "/admin/surge").json["cells"] as? [[String: Any]] ?? []
            let cell = cells.first { $0["cell"] as? String == second.json["target"] as? String }
            #expect(cell?["factor"] as? Double == 2.5, "\(cells)")
            if let cell, let south = cell["south"] as? Double, let north = cell["north"] as? Double,
                let west = cell["west"] as? Double, let east = cell["east"] as? Double
            {
                #expect(south <= 52.52 && 52.52 < north && west <= 13.405 && 13.405 < east, "\(cell)")
            }
            let bad = try await stack.call(.PUT, "/admin/command/levers/surge", json: ["at": point, "factor": 40] as [String: Any])
            #expect(bad.status == 400)
            #expect(bad.json["field"] as? String == "factor", "\(bad.text)")

            let key = UUID().uuidString
            let run = try await stack.call(.POST, "/admin/command/levers/settlement-batches", key: key)
            #expect(run.status == 201, "\(run.text)")
            #expect(run.json["action"] as? String == "settlement.run")
            let batch = try #require(run.json["target"] as? String)
            #expect((run.json["after"] as? [String: String])?["lastBatch"] == batch)
            let retried = try await stack.call(.POST, "/admin/command/levers/settlement-batches", key: key)
            #expect(retried.json["id"] as? Int == run.json["id"] as? Int)
            let batches = try await stack.call(.GET, "/admin/settlements").json["batches"] as? [[String: Any]] ?? []
            #expect(batches.count == 1, "one batch for one lever, retried: \(batches.count)")
            let next = try await stack.call(.POST, "/admin/command/levers/settlement-batches")
            #expect((next.json["before"] as? [String: String])?["lastBatch"] == batch)

            // A broadcast is checked before anyone is asked for drivers.
            for (body, field) in [
                (["at": point, "radiusKm": 0, "text": "hello"] as [String: Any], "radiusKm"),
                (["at": point, "radiusKm": 2, "text": "  "] as [String: Any], "text"),
                (["at": ["lat": 95, "lon": 0], "radiusKm": 2, "text": "hello"] as [String: Any], "at.lat"),
            ] {
                let refused = try await stack.call(.POST, "/admin/command/levers/broadcasts", json: body)
                #expect(refused.status == 400 && refused.json["field"] as? String == field, "\(field): \(refused.text)")
            }

            // A sampled request leaves a line in every service it passed through; an unsampled one in none.
            let traceID = (0..<32).map { _ in String(Int.random(in: 0..<16), radix: 16) }.joined()
            let rider = try await TestKeys.userToken("rider-\(UUID().uuidString.prefix(8))", role: .rider)
            let quoteBody: [String: Any] = ["pickup": point, "dropoff": ["lat": 52.53, "lon": 13.42]]
            for (flags, id) in [("01", traceID), ("00", String(traceID.reversed()))] {
                let quoted = try await testRequest(
                    .POST, stack.gateway + "/api/v1/rides/quote", json: quoteBody,
                    headers: ["Authorization": "Bearer \(rider)", "traceparent": "00-\(id)-00f067aa0ba902b7-\(flags)"])
                #expect(quoted.status == 200, "\(quoted.text)")
            }
            var traced: [[String: Any]] = []
            for _ in 0..<40 where traced.count < 2 {
                try await Task.sleep(for: .milliseconds(50))
                traced = try await stack.call(.GET, "/admin/command/traces/\(traceID)").json["lines"] as? [[String: Any]] ?? []
            }
            #expect(traced.map { $0["service"] as? String } == ["gateway", "order"], "in the order they received it: \(traced)")
            #expect(traced.first?["path"] as? String == "/api/v1/rides/quote")
            #expect(traced.last?["path"] as? String == "/v1/quotes")
            let unsampled = try await stack.call(.GET, "/admin/command/traces/\(String(traceID.reversed()))")
            #expect((unsampled.json["lines"] as? [Any])?.isEmpty == true, "\(unsampled.text)")
            #expect(try await stack.call(.GET, "/admin/command/traces/not%20an%20id").status == 400)

            // No Prometheus configured here: the board says so rather than showing an empty platform.
            let board = try await stack.call(.GET, "/admin/command/board")
            #expect(board.status == 200)
            #expect(board.json["prometheus"] as? String == "not configured")
        }
    }
}
