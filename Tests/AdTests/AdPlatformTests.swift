@testable import Ad
import Contracts
@testable import Coupon
import EventBus
import Foundation
@testable import Gateway
import HailKit
import HailKitTesting
import NIOHTTP1
import RedisKit
import Testing

/// The ad service behind a real gateway (and coupon, for conversions), found through the test run's
/// etcd; riders and admins with tokens signed as login signs them.
struct AdPlatform: Sendable {
    /// The key the ad service signs its tokens with here, so a test can make one it would have made.
    static let tokenKey = "ad-token-key-for-tests-only-0123456789"

    let gateway: String
    let orderStream: String
    let adminToken: String

    /// The stream counted impressions and clicks are published on.
    let adStream: String
    /// Each ad instance's own address, by shard.
    var ads: [String] = []

    /// With `cluster`, the ad service's Redis is that cluster (the gateway's stays the test run's); with
    /// `shards` above 1, ad runs that many instances, each owning the shard of that number, and every
    /// service is told so; `cities` is `ad.cities` for the ad service and the gateway.
    static func run<T: Sendable>(
        withCoupon: Bool = false, cluster: RedisClusterProcess? = nil, shards: Int = 1, cities: String? = nil,
        _ body: @Sendable (AdPlatform) async throws -> T
    ) async throws -> T {
        let prefix = "/" + TestEnvironment.unique("ads") + "/"
        let claims = TestEnvironment.unique("claims")
        let orders = TestEnvironment.unique("orders")
        let adStream = TestEnvironment.unique("adev")
        var settings = [
            "discovery.prefix": prefix, "ad.redis.prefix": TestEnvironment.unique("ad"), "ad.events.stream": adStream,
            "ad.coupon.stream": claims, "ad.order.stream": orders, "ad.refresh.ms": "100", "ad.counts.flush.ms": "100",
            "ad.token.key": tokenKey,
        ]
        if let cluster {
            settings["redis.port"] = String(cluster.ports[0])
            settings["redis.cluster"] = "true"
            settings["redis.cluster.nodes"] = cluster.ports.dropFirst().map { "127.0.0.1:\($0)" }.joined(separator: ",")
        }
        var gatewaySettings = [
            "discovery.prefix": prefix, "client.discovery.cache.ms": "1000", "gateway.rate.prefix": TestEnvironment.unique("rl"),
            "gateway.rate.limit": "100000",
        ]
        if let cities {
            settings["ad.cities"] = cities
            gatewaySettings["ad.cities"] = cities
        }
        if shards > 1 {
            settings["shards"] = "ad=\(shards)"
            gatewaySettings["shards"] = "ad=\(shards)"
        }
        var ads: [HailApplication] = []
        for shard in 0..<max(1, shards) {
            var own = settings
            if shards > 1 { own["shard"] = String(shard) }
            ads.append(try await Ad.buildApplication(reader: try .testing(own, service: "ad")))
        }
        // Discovery cached for a second: what the gateway relays on bytes it sends only to instances it
        // has listed, as in production.
        let gateway = try await Gateway.buildApplication(reader: try .testing(gatewaySettings, service: "gateway"))
        let admin = try await TestKeys.userToken("admin-\(UUID().uuidString.prefix(8))", role: .admin)
        let allAds = ads
        @Sendable func withAds(from index: Int, bases: [String]) async throws -> T {
            guard index < allAds.count else {
                return try await withRunningService(gateway) { base in
                    var platform = AdPlatform(gateway: base, orderStream: orders, adminToken: admin, adStream: adStream)
                    platform.ads = bases
                    // The gateway finds the ad service (every shard) once its registrations are in etcd.
                    for _ in 0..<100 {
                        if try await platform.admin(.GET, "/admin/ads/campaigns").status == 200 { break }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    return try await body(platform)
                }
            }
            return try await withRunningService(allAds[index]) { base in try await withAds(from: index + 1, bases: bases + [base]) }
        }
        @Sendable func platform() async throws -> T { try await withAds(from: 0, bases: []) }
        guard withCoupon else { return try await platform() }
        let coupon = try await Coupon.buildApplication(reader: try .testing([
            "discovery.prefix": prefix, "coupon.redis.prefix": TestEnvironment.unique("coupon"), "coupon.claims.stream": claims,
        ], service: "coupon"))
        return try await withRunningService(coupon) { _ in try await platform() }
    }

    func call(_ method: HTTPMethod, _ path: String, token: String, json: Any? = nil, headers: [String: String] = [:]) async throws -> TestResponse {
        var all = headers
        all["Authorization"] = "Bearer \(token)"
        return try await testRequest(method, gateway + "/api/v1" + path, json: json, headers: all)
    }

    func admin(_ method: HTTPMethod, _ path: String, json: Any? = nil) async throws -> TestResponse {
        try await call(method, path, token: adminToken, json: json, headers: ["Idempotency-Key": UUID().uuidString])
    }

    /// Creates a campaign from `overrides` over sensible settings and starts it; its id.
    func campaign(_ overrides: [String: Any] = [:], start: Bool = true) async throws -> String {
        let now = Date().timeIntervalSince1970
        var body: [String: Any] = [
            "name": "Ride more", "advertiser": "Kiosk 24", "placements": ["rider.waiting"],
            "creative": ["title": "Cold drinks", "text": "At the next corner"],
            "targeting": ["city": "Berlin"], "pricing": "cpm", "bidCents": 1000, "dailyBudgetCents": 100_000,
            "totalBudgetCents": 100_000, "frequencyCapPerDay": 1000, "pacing": "asap", "startsAt": now - 60, "endsAt": now + 3600,
        ]
        for (key, value) in overrides { body[key] = value }
        let created = try await admin(.POST, "/admin/ads/campaigns", json: body)
        #expect(created.status == 201, "\(created.text)")
        let id = try #require(created.json["id"] as? String)
        #expect(created.json["state"] as? String == "draft")
        if start {
            let resumed = try await admin(.POST, "/admin/ads/campaigns/\(id)/resume")
            #expect(resumed.json["state"] as? String == "active")
        }
        return id
    }

    func ad(_ token: String, lat: Double = 52.52, lon: Double = 13.405, placement: String = "rider.waiting") async throws -> TestResponse {
        try await call(.GET, "/ads?placement=\(placement)&lat=\(lat)&lon=\(lon)", token: token)
    }

    /// The campaign's report once everything counted is stored.
    func report(_ id: String, until done: @Sendable ([String: Any]) -> Bool = { _ in true }) async throws -> [String: Any] {
        var report: [String: Any] = [:]
        for _ in 0..<100 {
            report = try await admin(.GET, "/admin/ads/campaigns/\(id)/report").json
            if report["pendingOnStream"] as? Int == 0, done(report) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return report
    }
}

func rider(_ name: String = "rider") async throws -> (id: String, token: String) {
    let id = "\(name)-\(UUID().uuidString.prefix(8))"
    return (id, try await TestKeys.userToken(id, role: .rider))
}

@Suite("ads through the gateway", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(3)))
struct AdPlatformTests {
    @Test("an ad for an area is served inside it and not outside; a paused campaign is served nowhere within a second; at the cap a rider gets another campaign's ad or none")
    func targetingPauseAndCap() async throws {
        try await AdPlatform.run { platform in
            let local = try await platform.campaign([
                "name": "Corner shop", "frequencyCapPerDay": 2, "bidCents": 5000,
                "targeting": ["city": "Berlin", "area": ["lat": 52.52, "lon": 13.405, "radiusMeters": 1000]],
            ])
            let (_, token) = try await rider()
            // About 120 m from the centre, and 4.4 km.
            let inside = try await platform.ad(token, lat: 52.521, lon: 13.406)
            #expect(inside.status == 200)
            #expect(inside.json["campaignID"] as? String == local)
            #expect((inside.json["creative"] as? [String: Any])?["title"] as? String == "Cold drinks")
            #expect(try await platform.ad(token, lat: 52.56, lon: 13.405).status == 204)
            // Outside every city the service knows.
            #expect(try await platform.ad(token, lat: 48.13, lon: 11.58).status == 204)
            // A driver's placement is not a rider's; numbers out of range are named.
            let wrong = try await platform.ad(token, placement: "driver.idle")
            #expect(wrong.status == 400 && wrong.json["field"] as? String == "placement")
            #expect(try await platform.ad(token, lat: 91).json["field"] as? String == "lat")

            // Seen twice today: the cap of two is reached.
            for _ in 0..<2 {
                let ad = try await platform.ad(token, lat: 52.521, lon: 13.406)
                let shown = try await platform.call(.POST, "/ads/impressions", token: token, json: ["token": ad.json["impressionToken"] as? String ?? ""])
                #expect(shown.json["outcome"] as? String == "counted")
            }
            #expect(try await platform.ad(token, lat: 52.521, lon: 13.406).status == 204)
            // A city-wide campaign bidding less is what the capped rider sees now; a fresh rider still
            // sees the corner shop.
            let citywide = try await platform.campaign(["name": "City bank", "bidCents": 100])
            let other = try await platform.ad(token, lat: 52.521, lon: 13.406)
            #expect(other.json["campaignID"] as? String == citywide)
            let (_, fresh) = try await rider()
            var corner = 0
            for _ in 0..<10 where try await platform.ad(fresh, lat: 52.521, lon: 13.406).json["campaignID"] as? String == local { corner += 1 }
            #expect(corner >= 6, "the higher bid wins but for exploration")

            // Paused: within a second nobody is served it.
            let paused = try await platform.admin(.POST, "/admin/ads/campaigns/\(local)/pause")
            #expect(paused.json["state"] as? String == "paused")
            let pausedAt = ContinuousClock.now
            var served = 0
            while ContinuousClock.now - pausedAt < .seconds(1) {
                if try await platform.ad(fresh, lat: 52.521, lon: 13.406).json["campaignID"] as? String == local { served += 1 }
            }
            #expect(served == 0)
            // Paused twice is still paused; a draft cannot be paused; resumed, it is served again.
            #expect(try await platform.admin(.POST, "/admin/ads/campaigns/\(local)/pause").status == 200)
            let draft = try await platform.campaign(start: false)
            #expect(try await platform.admin(.POST, "/admin/ads/campaigns/\(draft)/pause").status == 409)
            _ = try await platform.admin(.POST, "/admin/ads/campaigns/\(local)/resume")
            var back = false
            for _ in 0..<20 where !back { back = try await platform.ad(fresh, lat: 52.521, lon: 13.406).json["campaignID"] as? String == local }
            #expect(back)
        }
    }

    @Test(
        "a CPM budget worth 100 impressions, 1,000 impressions sent at once by 50 riders with every token sent twice: exactly the budget spent, each token counted once — on one Redis and on a six-node Redis Cluster",
        arguments: [false, true])
    func budgetNeverOverspent(onCluster: Bool) async throws {
        let cluster = onCluster ? try RedisClusterProcess() : nil
        defer { cluster?.stopAll() }
        try await AdPlatform.run(cluster: cluster) { platform in
            // 1,000 cents per thousand: one cent an impression; a budget of 100 cents.
            let id = try await platform.campaign(["bidCents": 1000, "dailyBudgetCents": 100, "totalBudgetCents": 100])
            var riders: [(id: String, token: String)] = []
            for _ in 0..<50 { riders.append(try await rider()) }
            let riderList = riders
            // Twenty ads for each rider, asked for before any impression is counted.
            let served = try await withThrowingTaskGroup(of: [(String, String)].self) { group in
                for rider in riderList {
                    group.addTask {
                        var tokens: [(String, String)] = []
                        for _ in 0..<20 {
                            let ad = try await platform.ad(rider.token)
                            if let token = ad.json["impressionToken"] as? String { tokens.append((rider.token, token)) }
                        }
                        return tokens
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(served.count == 1000)
            // Every token twice, all at once (50 at a time in flight).
            let sends = (served + served).shuffled()
            let outcomes = try await withThrowingTaskGroup(of: (String, String).self) { group in
                var results: [(String, String)] = []
                for (index, (rider, token)) in sends.enumerated() {
                    if index >= 50, let result = try await group.next() { results.append(result) }
                    group.addTask {
                        let answer = try await platform.call(.POST, "/ads/impressions", token: rider, json: ["token": token])
                        return (token, answer.json["outcome"] as? String ?? "status \(answer.status)")
                    }
                }
                return try await group.reduce(into: results) { $0.append($1) }
            }
            let counted = outcomes.filter { $0.1 == "counted" }
            #expect(counted.count == 100)
            #expect(Set(counted.map(\.0)).count == 100, "no token counted twice")
            #expect(outcomes.filter { $0.1 == "duplicate" }.count == 1000, "every second send of a token is a duplicate")
            #expect(outcomes.filter { $0.1 == "budget-exhausted" }.count == 900)

            let report = try await platform.report(id) { (($0["totals"] as? [String: Any])?["impressions"] as? Int) == 100 }
            let totals = try #require(report["totals"] as? [String: Any])
            #expect(totals["impressions"] as? Int == 100)
            #expect(totals["spentMillicents"] as? Int == 100_000, "exactly the budget, in SQLite")
            #expect(totals["duplicates"] as? Int == 1000)
            let hours = report["hours"] as? [[String: Any]] ?? []
            var perHour = hours.reduce(0) { $0 + ($1["duplicates"] as? Int ?? 0) }
            // (The hours' figures are stored every 100 ms here: let the last ones land.)
            for _ in 0..<20 where perHour < 1000 {
                try await Task.sleep(for: .milliseconds(100))
                let later = try await platform.admin(.GET, "/admin/ads/campaigns/\(id)/report").json["hours"] as? [[String: Any]] ?? []
                perHour = later.reduce(0) { $0 + ($1["duplicates"] as? Int ?? 0) }
            }
            #expect(perHour == 1000, "the hours add up to the duplicates refused")
            #expect((report["campaign"] as? [String: Any])?["spentMillicents"] as? Int == 100_000, "exactly the budget, in Redis")
            // Out of budget, the campaign is no longer served.
            var exhausted = ""
            for _ in 0..<30 where exhausted != "exhausted" {
                exhausted = try await platform.admin(.GET, "/admin/ads/campaigns/\(id)").json["state"] as? String ?? ""
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(exhausted == "exhausted")
            #expect(try await platform.ad(riderList[0].token).status == 204)

            // Analytics' view: each counted impression once on the ad stream (republished from the books'
            // shard on a cluster).
            let redis = RedisClient(configuration: cluster?.configuration() ?? .init(port: TestEnvironment.redisPort, poolSize: 1))
            defer { Task { await redis.shutdown() } }
            var published: [String] = []
            for _ in 0..<50 where published.count < 100 {
                let entries = try await redis.xrange(EventEnvelope.streamKey(platform.adStream), from: "-", to: "+", count: 1000)
                published = entries.compactMap { entry in
                    entry.fields["payload"].flatMap { try? JSONDecoder().decode(AdEvents.Counted.self, from: Data($0)) }?.tokenID
                }
                if published.count < 100 { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(published.count == 100 && Set(published).count == 100, "\(published.count) counted impressions on the stream")
            if let cluster {
                // The campaign's books sit under their shard's hash tag on one master.
                let holders = try cluster.masterPorts().filter { !(try cluster.cli($0, "KEYS", "*}:c:\(id)")).isEmpty }
                #expect(holders.count == 1, "the campaign's books on masters \(holders)")
            }
        }
    }

    @Test("ad in two shards by city: each city's campaign made, served, counted and reported by its own shard through the gateway; both listed; each count once on the public stream; another shard's city or token refused with 421")
    func adsInShards() async throws {
        // Two cities that the two shards each own one of.
        let places = [
            ("Berlin", 52.52, 13.405), ("Hamburg", 53.55, 9.99), ("Munich", 48.137, 11.575), ("Cologne", 50.94, 6.96),
            ("Leipzig", 51.34, 12.37),
        ]
        let first = try #require(places.first { AdAPI.shard(ofCity: $0.0, count: 2) == 0 })
        let second = try #require(places.first { AdAPI.shard(ofCity: $0.0, count: 2) == 1 })
        let cities = [first, second].map { "\($0.0)@\($0.1),\($0.2),20000,Europe/Berlin" }.joined(separator: ";")
        try await AdPlatform.run(shards: 2, cities: cities) { platform in
            var ids: [String] = []
            for (shard, city) in [first, second].enumerated() {
                let id = try await platform.campaign(["name": "Drinks in \(city.0)", "targeting": ["city": city.0]])
                #expect(id.hasPrefix("s\(shard)-"), "\(city.0)'s campaign \(id) is shard \(shard)'s")
                ids.append(id)
            }
            let listed = try await platform.admin(.GET, "/admin/ads/campaigns")
            let listedIDs = ((listed.json["campaigns"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
            #expect(listedIDs == ids, "both shards' campaigns, the oldest first: \(listed.text)")

            let (_, token) = try await rider()
            var tokens: [(impression: String, click: String)] = []
            for (shard, city) in [first, second].enumerated() {
                // The catalog takes a resumed campaign at once; an ad at the city's centre is its campaign's.
                let ad = try await platform.ad(token, lat: city.1, lon: city.2)
                #expect(ad.status == 200, "\(city.0): \(ad.status) \(ad.text)")
                #expect(ad.json["campaignID"] as? String == ids[shard], "\(city.0) is served its own campaign: \(ad.text)")
                let impression = try #require(ad.json["impressionToken"] as? String)
                let click = try #require(ad.json["clickToken"] as? String)
                #expect(AdAPI.campaignID(ofToken: impression) == ids[shard], "the token names its campaign for the gateway")
                tokens.append((impression, click))
                for (path, sent) in [("/ads/impressions", impression), ("/ads/clicks", click)] {
                    let counted = try await platform.call(.POST, path, token: token, json: ["token": sent])
                    #expect(counted.json["outcome"] as? String == "counted", "\(city.0) \(path): \(counted.text)")
                }
            }
            // Nowhere: no ad, from whichever shard.
            #expect(try await platform.ad(token, lat: 0, lon: 0).status == 204)
            for (shard, id) in ids.enumerated() {
                let report = try await platform.report(id) {
                    let totals = $0["totals"] as? [String: Any]
                    return totals?["clicks"] as? Int == 1 && totals?["served"] as? Int == 1
                }
                let totals = try #require(report["totals"] as? [String: Any], "shard \(shard): \(report)")
                #expect(totals["served"] as? Int == 1 && totals["impressions"] as? Int == 1 && totals["clicks"] as? Int == 1, "shard \(shard): \(totals)")
                #expect(totals["spentMillicents"] as? Int == 1_000, "one CPM impression of 1,000 cents per thousand: \(totals)")
            }

            // Asked of the other shard directly (a caller with another city list): refused, nothing counted there.
            let (_, other) = try await rider("otto")
            let elsewhere = try await testRequest(
                .GET, platform.ads[1] + "/v1/ads?placement=rider.waiting&lat=\(first.1)&lon=\(first.2)",
                headers: ["Authorization": "Bearer \(other)"])
            #expect(elsewhere.status == 421 && elsewhere.json["type"] as? String == "urn:hailstorm:problem:misdirected", "\(elsewhere.text)")
            let wrongOwner = try await testRequest(
                .POST, platform.ads[1] + "/v1/impressions", json: ["token": tokens[0].impression],
                headers: ["Authorization": "Bearer \(token)"])
            #expect(wrongOwner.status == 421, "\(wrongOwner.text)")
            let now = Date().timeIntervalSince1970
            let made = try await testRequest(
                .POST, platform.ads[1] + "/v1/campaigns",
                json: [
                    "name": "Lost", "advertiser": "Kiosk", "placements": ["rider.waiting"], "creative": ["title": "Drinks", "text": "Cold"],
                    "targeting": ["city": first.0], "pricing": "cpm", "bidCents": 100, "dailyBudgetCents": 1000, "totalBudgetCents": 1000,
                    "frequencyCapPerDay": 10, "pacing": "asap", "startsAt": now - 60, "endsAt": now + 3600,
                ], headers: ["Authorization": "Bearer \(platform.adminToken)", "Idempotency-Key": UUID().uuidString])
            #expect(made.status == 421, "\(first.0)'s campaign made on the other shard: \(made.text)")
            let still = try await platform.admin(.GET, "/admin/ads/campaigns")
            #expect((still.json["campaigns"] as? [[String: Any]])?.count == 2, "\(still.text)")

            // Analytics' view: both shards' counts, each once, on the one public stream.
            let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort, poolSize: 1))
            defer { Task { await redis.shutdown() } }
            var published: [String] = []
            for _ in 0..<50 where published.count < 4 {
                let entries = try await redis.xrange(EventEnvelope.streamKey(platform.adStream), from: "-", to: "+", count: 100)
                published = entries.compactMap { entry in
                    entry.fields["payload"].flatMap { try? JSONDecoder().decode(AdEvents.Counted.self, from: Data($0)) }?.campaignID
                }
                if published.count < 4 { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(published.sorted() == (ids + ids).sorted(), "an impression and a click of each shard's campaign: \(published)")
        }
    }

    @Test("forged, expired, another user's and the wrong kind of token are refused with the reason; the ad's figures are in the report")
    func tokensAndReport() async throws {
        try await AdPlatform.run { platform in
            let id = try await platform.campaign(["pricing": "cpc", "bidCents": 25])
            let (_, token) = try await rider()
            let (_, other) = try await rider()
            let ad = try await platform.ad(token)
            let impression = try #require(ad.json["impressionToken"] as? String)
            let click = try #require(ad.json["clickToken"] as? String)
            let forged = String(impression.dropLast(3)) + (impression.hasSuffix("AAA") ? "BBB" : "AAA")
            let (riderID, _) = try await rider()
            let riderToken = try await TestKeys.userToken(riderID, role: .rider)
            let expired = AdTokens(key: Array(AdPlatform.tokenKey.utf8)).sign(.init(
                kind: .impression, id: UUID().uuidString, campaignID: id, userID: riderID, placement: .riderWaiting,
                expiresAt: Date().timeIntervalSince1970 - 1))
            for (sent, by, path, slug) in [
                (expired, riderToken, "/ads/impressions", "ad-token-expired"),
                (forged, token, "/ads/impressions", "invalid-ad-token"), (impression, other, "/ads/impressions", "invalid-ad-token"),
                (click, token, "/ads/impressions", "invalid-ad-token"), ("", token, "/ads/clicks", "invalid-ad-token"),
            ] {
                let refused = try await platform.call(.POST, path, token: by, json: ["token": sent])
                #expect(refused.status == 400)
                #expect(refused.json["type"] as? String == ProblemDocument.typePrefix + slug, "\(refused.text)")
                #expect(refused.json["field"] as? String == "token")
            }
            #expect(try await platform.call(.POST, "/ads/impressions", token: token, json: ["token": impression]).json["chargedMillicents"] as? Int == 0, "CPC: an impression is free")
            let clicked = try await platform.call(.POST, "/ads/clicks", token: token, json: ["token": click])
            #expect(clicked.json["outcome"] as? String == "counted")
            #expect(clicked.json["chargedMillicents"] as? Int == 25_000)
            // (Serving figures are stored every 100 ms here.)
            let report = try await platform.report(id) {
                let totals = $0["totals"] as? [String: Any]
                return totals?["clicks"] as? Int == 1 && totals?["served"] as? Int == 1
            }
            let totals = try #require(report["totals"] as? [String: Any])
            #expect(totals["requests"] as? Int == 1)
            #expect(totals["served"] as? Int == 1)
            #expect(totals["impressions"] as? Int == 1)
            #expect(totals["clicks"] as? Int == 1)
            #expect(totals["clickRate"] as? Double == 1)
            #expect(totals["spentMillicents"] as? Int == 25_000)
        }
    }

    @Test("with the ad service killed, the app gets no ad (204), not an error, on either of the gateway's paths; counting an impression is refused with a problem")
    func adServiceDown() async throws {
        let prefix = "/" + TestEnvironment.unique("noads") + "/"
        let ad = try ServiceProcess(
            "ad", redisPort: TestEnvironment.redisPort, discoveryPrefix: prefix,
            options: ["ad-redis-prefix": TestEnvironment.unique("ad"), "ad-events-stream": TestEnvironment.unique("adev"), "log-level": "warning"])
        try await ad.start()
        defer { ad.kill() }
        let gateway = try await Gateway.buildApplication(reader: try .testing(
            ["discovery.prefix": prefix, "client.discovery.cache.ms": "1000", "gateway.rate.prefix": TestEnvironment.unique("rl")],
            service: "gateway"))
        try await withRunningService(gateway) { base in
            let admin = try await TestKeys.userToken("admin-\(UUID().uuidString.prefix(8))", role: .admin)
            let (_, token) = try await rider()
            let now = Date().timeIntervalSince1970
            let campaign: [String: Any] = [
                "name": "Kiosk", "advertiser": "Kiosk", "placements": ["rider.waiting"], "creative": ["title": "Drinks", "text": "Cold"],
                "targeting": ["city": "Berlin"], "pricing": "cpm", "bidCents": 100, "dailyBudgetCents": 1000, "totalBudgetCents": 1000,
                "frequencyCapPerDay": 10, "pacing": "asap", "startsAt": now - 60, "endsAt": now + 3600,
            ]
            // (Until the gateway has found the ad service in etcd, the create is refused: 503.)
            var created = try await testRequest(.POST, base + "/api/v1/admin/ads/campaigns", json: campaign, headers: ["Authorization": "Bearer \(admin)"])
            for _ in 0..<50 where created.status != 201 {
                try await Task.sleep(for: .milliseconds(100))
                created = try await testRequest(.POST, base + "/api/v1/admin/ads/campaigns", json: campaign, headers: ["Authorization": "Bearer \(admin)"])
            }
            let id = try #require(created.json["id"] as? String, "\(created.text)")
            _ = try await testRequest(.POST, base + "/api/v1/admin/ads/campaigns/\(id)/resume", headers: ["Authorization": "Bearer \(admin)"])
            let url = base + "/api/v1/ads?placement=rider.waiting&lat=52.52&lon=13.405"
            // Served (the token verified on the router's path first, relayed on bytes after).
            for _ in 0..<3 {
                #expect(try await testRequest(.GET, url, headers: ["Authorization": "Bearer \(token)"]).status == 200)
            }
            ad.kill()
            // Still listed for a moment, and dead: the relay's call fails, the app gets nothing to show.
            for _ in 0..<3 {
                let none = try await testRequest(.GET, url, headers: ["Authorization": "Bearer \(token)"])
                #expect(none.status == 204)
                #expect(none.body.isEmpty)
            }
            // A query the relay does not pass on goes to the router, which answers the same way.
            let routed = try await testRequest(.GET, url + "&utm=x", headers: ["Authorization": "Bearer \(token)"])
            #expect(routed.status == 204)
            // Still the gateway's to refuse: no token.
            #expect(try await testRequest(.GET, url).status == 401)
            let counted = try await testRequest(
                .POST, base + "/api/v1/ads/impressions", json: ["token": "x"], headers: ["Authorization": "Bearer \(token)"])
            #expect(counted.status >= 500 && counted.header("Content-Type") == "application/problem+json")
        }
    }

    @Test("a click, then a coupon claim and a ride within 30 minutes, is one conversion; a claim without a click is none")
    func conversion() async throws {
        try await AdPlatform.run(withCoupon: true) { platform in
            let now = Date().timeIntervalSince1970
            let sale = try await platform.admin(.POST, "/admin/coupons/campaigns", json: [
                "name": "Spring", "city": "Berlin", "kind": "amount", "amountOffCents": 300, "minimumFareCents": 0, "stock": 10,
                "perUserLimit": 1, "startsAt": now - 60, "endsAt": now + 3600,
            ])
            let coupon = try #require(sale.json["id"] as? String)
            let id = try await platform.campaign([
                "creative": ["title": "3 € off", "text": "Your next ride", "couponCampaignID": coupon], "pricing": "cpc", "bidCents": 10,
            ])
            let (riderID, token) = try await rider()
            let ad = try await platform.ad(token)
            #expect((ad.json["creative"] as? [String: Any])?["couponCampaignID"] as? String == coupon)
            _ = try await platform.call(.POST, "/ads/impressions", token: token, json: ["token": ad.json["impressionToken"] as? String ?? ""])
            _ = try await platform.call(.POST, "/ads/clicks", token: token, json: ["token": ad.json["clickToken"] as? String ?? ""])
            #expect(try await platform.call(.POST, "/coupons/campaigns/\(coupon)/claim", token: token).status == 201)
            // The rider orders a ride: order's event on its stream, as order's outbox writes it.
            let created = OrderEvents.Created(
                orderID: UUID().uuidString, riderID: riderID, pickup: GeoPoint(lat: 52.52, lon: 13.405),
                dropoff: GeoPoint(lat: 52.5, lon: 13.4), fareCents: 1200, createdAt: Date().timeIntervalSince1970)
            let envelope = try EventEnvelope(created, source: "order")
            let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort))
            _ = try await redis.send(RedisCommand(
                "XADD", EventEnvelope.streamKey(platform.orderStream), "*", "id", envelope.id, "type", envelope.type, "source",
                envelope.source, "at", String(envelope.occurredAt), "payload", envelope.payload))
            // Another rider claims without having clicked.
            let (_, stranger) = try await rider()
            #expect(try await platform.call(.POST, "/coupons/campaigns/\(coupon)/claim", token: stranger).status == 201)

            let report = try await platform.report(id) { (($0["totals"] as? [String: Any])?["conversions"] as? Int ?? 0) >= 1 }
            let totals = try #require(report["totals"] as? [String: Any])
            #expect(totals["clicks"] as? Int == 1)
            // Give the ride time to arrive too: it must not make a second conversion.
            try await Task.sleep(for: .milliseconds(1500))
            let later = try #require(try await platform.report(id)["totals"] as? [String: Any])
            #expect(later["conversions"] as? Int == 1)
        }
    }
}
