import Contracts
import Foundation
import HailKitTesting
import RedisKit
import Testing

/// The ride flow with every service on a Redis Cluster instead of one Redis.
@Suite(
    "rides on a Redis Cluster", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"),
    .serialized, .timeLimit(.minutes(3)))
struct ClusterRideTests {
    @Test("on a six-node Redis Cluster with order in three shards: a ride assigned, pushed and driven to the end; an offered ride grabbed by ten drivers at once, one winner; the platform's keys spread over the three masters")
    func ridesOnCluster() async throws {
        let platform = try Platform(matching: ["matching-offer-drivers": "10"], redisCluster: true, orderShards: 3)
        defer { platform.stopAll() }
        let cluster = try #require(platform.cluster)
        try await platform.start()
        let rider = try await platform.account("rider", name: "Clara")
        var drivers: [(id: String, token: String)] = []
        for i in 0..<10 {
            let driver = try await platform.account("driver", name: "Driver \(i)")
            let online = try await platform.send(.POST, "/driver/online", token: driver.token, body: near(i))
            try #require(online.status == 200, "\(online.text)")
            drivers.append(driver)
        }
        let riderPushes = try await PushInbox.connect(platform, token: rider.token)
        let driverPushes = try await PushInbox.connect(platform, token: drivers[9].token)
        defer { riderPushes.close(); driverPushes.close() }

        // Assigned: the rider is told who comes, the trip runs to the end.
        let assigned = try await platform.send(
            .POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff, "dispatch": "assign"],
            idempotencyKey: UUID().uuidString)
        try #require(assigned.status == 201, "\(assigned.text)")
        let first = try #require(assigned.json["id"] as? String)
        let told = try await riderPushes.waitFor { $0["type"] as? String == "order.assigned" && $0["orderID"] as? String == first }
        let driverID = try #require(told["driverID"] as? String)
        let driver = try #require(drivers.first { $0.id == driverID })
        for verb in ["arrive", "start", "complete"] {
            let moved = try await platform.send(.POST, "/driver/rides/\(first)/\(verb)", token: driver.token)
            #expect(moved.status == 200, "\(verb): \(moved.text)")
        }
        _ = try await riderPushes.waitFor { $0["type"] as? String == "order.completed" && $0["orderID"] as? String == first }

        // Offered: every driver grabs at once; the grab script's keys share the order's slot.
        let offered = try await platform.send(
            .POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff, "dispatch": "offer"],
            idempotencyKey: UUID().uuidString)
        try #require(offered.status == 201, "\(offered.text)")
        let second = try #require(offered.json["id"] as? String)
        _ = try await driverPushes.waitFor { $0["type"] as? String == "order.offered" && $0["orderID"] as? String == second }
        let statuses = try await withThrowingTaskGroup(of: (String, Int).self) { group in
            for driver in drivers {
                group.addTask { (driver.id, try await platform.send(.POST, "/driver/offers/\(second)/grab", token: driver.token).status) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        let winners = statuses.filter { $0.value == 200 }.map(\.key)
        #expect(winners.count == 1, "\(statuses)")
        #expect(statuses.values.filter { $0 == 409 }.count == 9, "\(statuses)")
        let won = try await platform.waitForOrder(second, token: rider.token) { $0["state"] as? String == "assigned" }
        #expect(won["driverID"] as? String == winners.first)

        // The pushes rode sharded pub/sub: each user's channel subscribed on its slot's master (and only
        // there), none as a classic channel that every node would carry.
        for user in [rider.id, drivers[9].id] {
            let channel = PushMessage.channel(user: user)
            let owner = try #require(try cluster.master(ofSlot: HashSlot.of(channel)))
            for port in try cluster.masterPorts() {
                let sharded = try cluster.cli(port, "PUBSUB", "SHARDCHANNELS", channel)
                #expect(sharded.isEmpty == (port != owner), "\(channel) on master \(port) (its slot's master: \(owner)): \(sharded)")
                #expect(try cluster.cli(port, "PUBSUB", "CHANNELS", "push:user:*").isEmpty)
            }
        }

        // Nothing lives on one node only: each master holds a share of the platform's keys.
        for port in try cluster.masterPorts() {
            #expect(Int(try cluster.cli(port, "DBSIZE")) ?? 0 > 0, "master \(port) holds none of the keys")
        }
    }

    @Test("order in three shards on the Redis Cluster: each rider's rides on the shard of their id and named by it, a driver's rides listed from every shard newest first, page by page; a shard down takes only its own rides away")
    func ordersInShards() async throws {
        let platform = try Platform(redisCluster: true, orderShards: 3)
        defer { platform.stopAll() }
        try await platform.start()
        let driver = try await platform.account("driver", name: "Sam")
        // A rider for each shard: where a rider's orders live follows from their id.
        var riders: [Int: (id: String, token: String)] = [:]
        for _ in 0..<40 where riders.count < 3 {
            let rider = try await platform.account("rider")
            riders[Shards.shard(forKey: rider.id, count: 3)] = riders[Shards.shard(forKey: rider.id, count: 3)] ?? rider
        }
        try #require(riders.count == 3, "40 riders and not one on each shard")
        var rides: [Int: String] = [:]
        for shard in 0..<3 {
            let rider = try #require(riders[shard])
            let (id, _) = try await platform.completedRide(rider: rider, driver: driver)
            #expect(Shards.shard(ofID: id, count: 3) == shard, "rider of shard \(shard) got \(id)")
            #expect(id.hasPrefix("s\(shard)-"))
            rides[shard] = id
            let mine = try await platform.send(.GET, "/rides", token: rider.token)
            #expect(mine.status == 200 && (mine.json["orders"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [id], "\(mine.text)")
        }

        // The driver's rides are on all three: one list, newest first, two to a page.
        let firstPage = try await platform.send(.GET, "/rides?limit=2", token: driver.token)
        try #require(firstPage.status == 200, "\(firstPage.text)")
        let cursor = try #require(firstPage.json["nextCursor"] as? String, "\(firstPage.text)")
        let secondPage = try await platform.send(.GET, "/rides?limit=2&cursor=\(cursor)", token: driver.token)
        try #require(secondPage.status == 200, "\(secondPage.text)")
        #expect(secondPage.json["nextCursor"] == nil || secondPage.json["nextCursor"] is NSNull)
        let listed = [firstPage, secondPage].flatMap { ($0.json["orders"] as? [[String: Any]]) ?? [] }.compactMap { $0["id"] as? String }
        #expect(listed == [rides[2], rides[1], rides[0]].compactMap { $0 }, "newest first across the shards: \(listed)")

        #expect(try await platform.send(.GET, "/rides/s7-\(UUID().uuidString.lowercased())", token: driver.token).status == 404)
        #expect(try await platform.send(.GET, "/rides/s1-\(UUID().uuidString.lowercased())", token: driver.token).status == 404)

        // Shard 1 down: its ride cannot be read, the others can; a listing that would miss its part is refused.
        platform.orders[1].kill()
        var status = 0
        for _ in 0..<50 {
            status = try await platform.send(.GET, "/rides/\(try #require(rides[1]))", token: driver.token).status
            if status >= 500 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(status == 503 || status == 502 || status == 504, "shard 1 is down and its ride answered \(status)")
        for shard in [0, 2] {
            let ride = try await platform.send(.GET, "/rides/\(try #require(rides[shard]))", token: driver.token)
            #expect(ride.status == 200 && ride.json["state"] as? String == "completed", "shard \(shard): \(ride.text)")
        }
        #expect(try await platform.send(.GET, "/rides", token: driver.token).status >= 500)
        try await platform.orders[1].start()
        let again = try await platform.waitForOrder(try #require(rides[1]), token: try #require(riders[1]).token) { _ in true }
        #expect(again["state"] as? String == "completed", "the shard came back with its ride")
    }

    @Test("coupon in two shards on the Redis Cluster: each campaign made on the shard its Idempotency-Key names (a repeat meets the first), its claims named by it; the campaigns and a rider's wallet listed from both; a claim sent to the wrong shard refused; a shard down takes only its own campaigns away")
    func couponsInShards() async throws {
        let platform = try Platform(money: true, redisCluster: true, couponShards: 2)
        defer { platform.stopAll() }
        try await platform.start()
        let admin = try await platform.admin().token
        let rider = try await platform.account("rider", name: "Wanda")
        let now = Date().timeIntervalSince1970
        var campaigns: [String] = []
        var claims: [String] = []
        for shard in 0..<2 {
            let key = platform.campaignKey(onShard: shard)
            let made = try await withThrowingTaskGroup(of: TestResponse.self) { group in
                for _ in 0..<5 {
                    group.addTask {
                        // Shard 1's sale opened earlier: it is listed first.
                        try await platform.send(.POST, "/admin/coupons/campaigns", token: admin, body: [
                            "name": "Shard \(shard) sale", "city": "Berlin", "kind": "amount", "amountOffCents": 100 + shard,
                            "minimumFareCents": 0, "stock": 5, "perUserLimit": 1, "startsAt": now - 10 - Double(shard), "endsAt": now + 3600,
                        ], idempotencyKey: key)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(made.map(\.status) == Array(repeating: 201, count: 5), "\(made.map(\.text))")
            let ids = Set(made.compactMap { $0.json["id"] as? String })
            #expect(ids.count == 1, "five creates with one key made one campaign: \(ids)")
            let id = try #require(ids.first)
            #expect(id.hasPrefix("s\(shard)-"), "campaign \(id) is shard \(shard)'s")
            campaigns.append(id)
            let claim = try await platform.send(.POST, "/coupons/campaigns/\(id)/claim", token: rider.token)
            try #require(claim.status == 201, "\(claim.text)")
            let claimID = try #require(claim.json["claimID"] as? String)
            #expect(claimID.hasPrefix("s\(shard)-"), "claim \(claimID) of shard \(shard)'s campaign")
            claims.append(claimID)
        }

        // One wallet from both shards, the newest claim first.
        var wallet: [String] = []
        for _ in 0..<100 {
            let answer = try await platform.send(.GET, "/coupons/wallet", token: rider.token)
            wallet = ((answer.json["coupons"] as? [[String: Any]]) ?? []).compactMap { $0["claimID"] as? String }
            if wallet.count == 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(wallet == [claims[1], claims[0]], "the wallet lists both shards' coupons newest first: \(wallet)")
        let listed = try await platform.send(.GET, "/coupons/campaigns", token: rider.token)
        let listedIDs = ((listed.json["campaigns"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
        #expect(listedIDs == [campaigns[1], campaigns[0]], "both shards' campaigns, the earliest sale first: \(listed.text)")
        for (shard, id) in campaigns.enumerated() {
            let audit = try await platform.send(.GET, "/admin/coupons/campaigns/\(id)/audit", token: admin)
            #expect(audit.json["granted"] as? Int == 1 && audit.json["persisted"] as? Int == 1, "shard \(shard): \(audit.text)")
        }
        #expect(try await platform.send(.POST, "/coupons/campaigns/s5-\(UUID().uuidString)/claim", token: rider.token).status == 404)
        // Shard 0's campaign asked of shard 1 (a caller with another shard map): refused, nothing taken.
        let other = try await platform.account("rider", name: "Otto")
        let misdirected = try await testRequest(
            .POST, platform.coupons[1].baseURL + "/v1/campaigns/\(campaigns[0])/claim", headers: ["Authorization": "Bearer \(other.token)"])
        #expect(misdirected.status == 421, "\(misdirected.text)")
        #expect(misdirected.json["type"] as? String == "urn:hailstorm:problem:misdirected")
        let untouched = try await platform.send(.GET, "/coupons/campaigns/\(campaigns[0])", token: other.token)
        #expect(untouched.json["remaining"] as? Int == 4, "\(untouched.text)")

        // Shard 1 down: its campaign's claims and a wallet missing its part fail; shard 0's sale goes on.
        platform.coupons[1].kill()
        var status = 0
        for _ in 0..<50 {
            status = try await platform.send(.POST, "/coupons/campaigns/\(campaigns[1])/claim", token: other.token).status
            if status >= 500 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(status == 503 || status == 502 || status == 504, "shard 1 is down and its campaign's claim answered \(status)")
        #expect(try await platform.send(.GET, "/coupons/wallet", token: rider.token).status >= 500)
        let meanwhile = try await platform.send(.POST, "/coupons/campaigns/\(campaigns[0])/claim", token: other.token)
        #expect(meanwhile.status == 201, "\(meanwhile.text)")
        try await platform.coupons[1].start()
        var back = 0
        for _ in 0..<100 {
            back = try await platform.send(.POST, "/coupons/campaigns/\(campaigns[1])/claim", token: other.token, idempotencyKey: "otto-1").status
            if back == 201 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(back == 201, "shard 1 came back and its sale with it")
    }
}
