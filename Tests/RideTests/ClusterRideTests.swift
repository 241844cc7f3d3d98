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
    @Test("on a six-node Redis Cluster: a ride assigned, pushed and driven to the end; an offered ride grabbed by ten drivers at once, one winner; the platform's keys spread over the three masters")
    func ridesOnCluster() async throws {
        let platform = try Platform(matching: ["matching-offer-drivers": "10"], redisCluster: true)
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
}
