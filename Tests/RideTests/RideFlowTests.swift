import Contracts
import Foundation
import HailKitTesting
import RedisKit
import Testing

/// Pickups around Berlin's centre (the matching service's default city).
var pickup: [String: Any] { ["lat": 52.5200, "lon": 13.4050] }
var dropoff: [String: Any] { ["lat": 52.5000, "lon": 13.4500] }

func near(_ i: Int) -> [String: Any] {
    ["lat": 52.5200 + Double(i % 10) * 0.0005, "lon": 13.4050 + Double(i / 10) * 0.0005]
}

@Suite("a ride end to end: gateway, login, order, matching and order-grab as separate processes", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .serialized, .timeLimit(.minutes(5)))
struct RideFlowTests {
    @Test("assign mode: quote, order, assignment pushed to rider and driver over WebSocket, trip completed, history complete; illegal moves refused")
    func assignMode() async throws {
        let platform = try Platform()
        defer { platform.stopAll() }
        try await platform.start()
        let rider = try await platform.account("rider", name: "Rita")
        let driver = try await platform.account("driver", name: "Dario")
        let riderPushes = try await PushInbox.connect(platform, token: rider.token)
        let driverPushes = try await PushInbox.connect(platform, token: driver.token)
        defer { riderPushes.close(); driverPushes.close() }

        let online = try await platform.send(.POST, "/driver/online", token: driver.token, body: near(3))
        #expect(online.status == 200, "\(online.text)")
        #expect(online.json["state"] as? String == "available")

        let quote = try await platform.send(.POST, "/rides/quote", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff])
        #expect(quote.status == 200, "\(quote.text)")
        let fare = try #require(quote.json["fareCents"] as? Int)
        #expect(fare >= 500)

        let key = UUID().uuidString
        let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff], idempotencyKey: key)
        #expect(created.status == 201, "\(created.text)")
        let orderID = try #require(created.json["id"] as? String)
        #expect(created.json["fareCents"] as? Int == fare)
        // The same create again (a retry after a lost answer) is the same order, not a second one.
        let replay = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff], idempotencyKey: key)
        #expect(replay.json["id"] as? String == orderID)

        let riderSaw = try await riderPushes.waitFor { $0["type"] as? String == "order.assigned" && $0["orderID"] as? String == orderID }
        #expect(riderSaw["driverID"] as? String == driver.id)
        _ = try await driverPushes.waitFor { $0["type"] as? String == "order.assigned" && $0["orderID"] as? String == orderID }

        // Moving the trip is the assigned driver's, in order.
        let early = try await platform.send(.POST, "/driver/rides/\(orderID)/complete", token: driver.token)
        #expect(early.status == 409, "complete before start: \(early.text)")
        #expect(early.json["detail"] as? String == "The order is assigned; it cannot become completed")
        let byRider = try await platform.send(.POST, "/driver/rides/\(orderID)/complete", token: rider.token)
        #expect(byRider.status == 403)
        for verb in ["arrive", "start"] {
            let moved = try await platform.send(.POST, "/driver/rides/\(orderID)/\(verb)", token: driver.token)
            #expect(moved.status == 200, "\(verb): \(moved.text)")
        }
        _ = try await riderPushes.waitFor { $0["type"] as? String == "order.arriving" }
        let done = try await platform.send(.POST, "/driver/rides/\(orderID)/complete", token: driver.token)
        #expect(done.status == 200, "\(done.text)")
        _ = try await riderPushes.waitFor { $0["type"] as? String == "order.completed" && $0["orderID"] as? String == orderID }
        _ = try await driverPushes.waitFor { $0["type"] as? String == "order.completed" }

        let cancelLate = try await platform.send(.POST, "/rides/\(orderID)/cancel", token: rider.token, body: ["reason": "too late"])
        #expect(cancelLate.status == 409, "cancel after completion: \(cancelLate.text)")

        let history = try await platform.send(.GET, "/rides", token: rider.token)
        #expect(history.status == 200)
        let orders = try #require(history.json["orders"] as? [[String: Any]])
        #expect(orders.count == 1, "one order despite the replayed create")
        #expect(orders.first?["state"] as? String == "completed")
        #expect(orders.first?.states == ["created", "offered", "assigned", "arriving", "in_trip", "completed"])
        let driverHistory = try await platform.send(.GET, "/rides", token: driver.token)
        #expect((driverHistory.json["orders"] as? [[String: Any]])?.first?["id"] as? String == orderID)

        // Another driver cannot see this order; a rider cannot go online.
        let stranger = try await platform.account("driver", name: "Stranger")
        #expect(try await platform.send(.GET, "/rides/\(orderID)", token: stranger.token).status == 403)
        #expect(try await platform.send(.POST, "/driver/online", token: rider.token, body: near(1)).status == 403)
        // Bad input is a 400 problem naming the field.
        let bad = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": ["lat": 123, "lon": 0], "dropoff": dropoff])
        #expect(bad.status == 400)
        #expect(bad.header("Content-Type")?.hasPrefix("application/problem+json") == true)
    }

    @Test("a dispatch window's assignments, and its offers, in one call to order: each stands or is refused on its own, with the reason a single one gets; the same batch again changes nothing; order-grab opens a window's races together or refuses the batch")
    func assignmentBatch() async throws {
        let platform = try Platform()
        defer { platform.stopAll() }
        try await platform.start()
        let rider = try await platform.account("rider")
        let admin = try await platform.admin()
        // Drivers who never go online: matching has nobody to dispatch, so the orders wait for this test.
        let (a, b, c) = (try await platform.account("driver"), try await platform.account("driver"), try await platform.account("driver"))
        var orders: [String] = []
        for index in 0..<4 {
            let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": near(index), "dropoff": dropoff])
            #expect(created.status == 201, "\(created.text)")
            orders.append(try #require(created.json["id"] as? String))
        }
        let direct = ["Authorization": "Bearer \(admin.token)"]
        let single = try await testRequest(
            .POST, platform.order.baseURL + "/v1/orders/\(orders[0])/assign", json: ["driverID": a.id, "via": "dispatch"], headers: direct)
        #expect(single.status == 200, "\(single.text)")
        let cancelled = try await platform.send(.POST, "/rides/\(orders[3])/cancel", token: rider.token, body: ["reason": "changed my mind"])
        #expect(cancelled.status == 200, "\(cancelled.text)")

        let batch: [String: Any] = [
            "assignments": [
                ["orderID": orders[1], "driverID": a.id, "via": "dispatch", "pickupKm": 0.4],
                ["orderID": orders[2], "driverID": b.id, "via": "dispatch", "pickupKm": 1.25],
                ["orderID": orders[3], "driverID": c.id, "via": "dispatch"],
                ["orderID": "no-such-order", "driverID": c.id, "via": "dispatch"],
            ]
        ]
        func send() async throws -> [[String: Any]] {
            let answer = try await testRequest(.POST, platform.order.baseURL + "/v1/assignments", json: batch, headers: direct)
            #expect(answer.status == 200, "\(answer.text)")
            return try #require(answer.json["results"] as? [[String: Any]])
        }
        for round in ["first", "repeated"] {
            let results = try await send()
            #expect(results.map { $0["orderID"] as? String } == [orders[1], orders[2], orders[3], "no-such-order"], "\(round)")
            #expect(results.map { $0["assigned"] as? Bool } == [false, true, false, false], "\(round): \(results)")
            #expect(results.map { $0["status"] as? Int } == [409, nil, 409, 404], "\(round): \(results)")
            #expect(results.map { $0["problem"] as? String } == ["driver-busy", nil, "illegal-transition", "not-found"], "\(round): \(results)")
            let assigned = try await platform.send(.GET, "/rides/\(orders[2])", token: rider.token)
            #expect(assigned.json["state"] as? String == "assigned", "\(round)")
            #expect(assigned.json["driverID"] as? String == b.id, "\(round)")
            #expect(assigned.json.states == ["created", "offered", "assigned"], "\(round): one assignment, however often it is sent")
            let history = try #require(assigned.json["history"] as? [[String: Any]])
            #expect(history.last?["reason"] as? String == "dispatch, pickup 1.25 km")
            let busy = try await platform.send(.GET, "/rides/\(orders[1])", token: rider.token)
            #expect(busy.json["state"] as? String == "created", "\(round): the refused order still waits")
        }

        // Bad batches are refused whole, naming the field; only services and admins may send one.
        let empty = try await testRequest(.POST, platform.order.baseURL + "/v1/assignments", json: ["assignments": []], headers: direct)
        #expect(empty.status == 400)
        #expect(empty.json["field"] as? String == "assignments")
        let teleport = try await testRequest(
            .POST, platform.order.baseURL + "/v1/assignments",
            json: ["assignments": [["orderID": orders[1], "driverID": c.id, "via": "teleport"]]], headers: direct)
        #expect(teleport.status == 400)
        #expect(teleport.json["field"] as? String == "assignments[0].via")
        let far = try await testRequest(
            .POST, platform.order.baseURL + "/v1/assignments",
            json: ["assignments": [["orderID": orders[1], "driverID": c.id, "via": "dispatch", "pickupKm": 1e308]]], headers: direct)
        #expect(far.status == 400)
        #expect(far.json["field"] as? String == "assignments[0].pickupKm")
        let byRider = try await testRequest(
            .POST, platform.order.baseURL + "/v1/assignments", json: batch, headers: ["Authorization": "Bearer \(rider.token)"])
        #expect(byRider.status == 403)
        #expect(try await platform.send(.GET, "/rides/\(orders[1])", token: rider.token).json["state"] as? String == "created")

        // Offers: a waiting order is offered, a cancelled one and an unknown one are refused, each with
        // its reason; sent again, nothing changes.
        let offers: [String: Any] = [
            "offers": [
                ["orderID": orders[1], "driverIDs": [b.id, c.id]],
                ["orderID": orders[3], "driverIDs": [c.id]],
                ["orderID": "no-such-order", "driverIDs": [a.id]],
            ]
        ]
        for round in ["first", "repeated"] {
            let answer = try await testRequest(.POST, platform.order.baseURL + "/v1/offers", json: offers, headers: direct)
            #expect(answer.status == 200, "\(answer.text)")
            let results = try #require(answer.json["results"] as? [[String: Any]])
            #expect(results.map { $0["offered"] as? Bool } == [true, false, false], "\(round): \(results)")
            #expect(results.map { $0["problem"] as? String } == [nil, "illegal-transition", "not-found"], "\(round): \(results)")
            let offered = try await platform.send(.GET, "/rides/\(orders[1])", token: rider.token)
            #expect(offered.json.states == ["created", "offered"], "\(round): one offer, however often it is sent")
        }
        let noDrivers = try await testRequest(
            .POST, platform.order.baseURL + "/v1/offers", json: ["offers": [["orderID": orders[1], "driverIDs": []]]], headers: direct)
        #expect(noDrivers.status == 400)
        #expect(noDrivers.json["field"] as? String == "offers[0].driverIDs")

        // order-grab: a batch with one offer already over opens none of its races.
        let now = Date().timeIntervalSince1970
        let races: [String: Any] = [
            "offers": [
                ["orderID": orders[1], "driverIDs": [b.id], "expiresAt": now + 30],
                ["orderID": orders[2], "driverIDs": [c.id], "expiresAt": now - 1],
            ]
        ]
        let refused = try await testRequest(.POST, platform.grab.baseURL + "/v1/offers/batch", json: races, headers: direct)
        #expect(refused.status == 400, "\(refused.text)")
        #expect(refused.json["field"] as? String == "offers[1].expiresAt")
        let notOpen = try await platform.send(.POST, "/driver/offers/\(orders[1])/grab", token: b.token)
        #expect(notOpen.status == 409, "a race the refused batch named was not opened: \(notOpen.text)")
        #expect(notOpen.json["type"] as? String == "urn:hailstorm:problem:offer-ended", "\(notOpen.text)")
    }

    @Test("offer mode: 50 drivers grab the same order at once; exactly one wins, 49 are told it is taken")
    func grabStorm() async throws {
        let platform = try Platform(matching: ["matching-dispatch-mode": "offer", "matching-offer-drivers": "50"])
        defer { platform.stopAll() }
        try await platform.start()
        let rider = try await platform.account("rider")
        var drivers: [(id: String, token: String)] = []
        for i in 0..<50 {
            let driver = try await platform.account("driver", name: "Driver \(i)")
            let online = try await platform.send(.POST, "/driver/online", token: driver.token, body: near(i))
            try #require(online.status == 200, "\(online.text)")
            drivers.append(driver)
        }
        let somePushes = try await PushInbox.connect(platform, token: drivers[17].token)
        defer { somePushes.close() }

        let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff])
        let orderID = try #require(created.json["id"] as? String)
        _ = try await somePushes.waitFor { $0["type"] as? String == "order.offered" && $0["orderID"] as? String == orderID }

        let statuses = try await withThrowingTaskGroup(of: (String, Int).self) { group in
            for driver in drivers {
                group.addTask { (driver.id, try await platform.send(.POST, "/driver/offers/\(orderID)/grab", token: driver.token).status) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        let winners = statuses.filter { $0.value == 200 }.map(\.key)
        #expect(winners.count == 1)
        #expect(statuses.values.filter { $0 == 409 }.count == 49)

        let order = try await platform.waitForOrder(orderID, token: rider.token) { $0["state"] as? String == "assigned" }
        #expect(order["driverID"] as? String == winners.first)
        #expect(order.states.filter { $0 == "assigned" }.count == 1)
        // The winner asking again is still the winner; a loser asking again is still told no.
        let again = try await platform.send(.POST, "/driver/offers/\(orderID)/grab", token: try #require(drivers.first { $0.id == winners.first }).token)
        #expect(again.status == 200)

        let admin = try await platform.admin()
        let audit = try await platform.send(.GET, "/admin/grabs/\(orderID)", token: admin.token)
        let attempts = try #require(audit.json["attempts"] as? [[String: Any]])
        #expect(attempts.count == 51)
        #expect(attempts.filter { $0["outcome"] as? String == "won" }.compactMap { $0["driverID"] as? String }.allSatisfy { $0 == winners.first })
        #expect(attempts.filter { $0["outcome"] as? String == "taken" }.count == 49)
    }

    @Test("offer mode: an order whose offered drivers all take other trips is offered again at once to a free driver, not when its offer lapses")
    func offerWithdrawn() async throws {
        let race = try await OfferRace(spots: [1, 2, 9])
        defer { race.stop() }
        let (a, b, c) = (race.drivers[0], race.drivers[1], race.drivers[2])

        // The first two orders go to the two nearest drivers, A and B.
        let first = try await race.order()
        try await race.offered(first, to: a)
        try await race.offered(first, to: b)
        let second = try await race.order()
        try await race.offered(second, to: a)
        // A takes the second: the first still stands for B.
        #expect(try await race.grab(second, by: a).status == 200)
        // The third goes to B and C (A is busy); B takes it, and nobody the first was offered to is free.
        let third = try await race.order()
        try await race.offered(third, to: b)
        #expect(try await race.grab(third, by: b).status == 200)
        // The first is offered to C in the next windows, not two minutes later.
        try await race.offered(first, to: c, timeout: .seconds(15))
        #expect(!c.pushes.messages.contains { $0["type"] as? String == "order.offered" && $0["orderID"] as? String == second })
        #expect(try await race.grab(first, by: c).status == 200)
        let admin = try await race.platform.admin()
        let assigned = try await race.platform.waitForOrder(first, token: admin.token) { $0["state"] as? String == "assigned" }
        #expect(assigned["driverID"] as? String == c.id)
    }

    @Test("offer mode: a grab won by a driver already on another trip is refused with driver-busy, and the order is offered again at once to the free drivers, not when its offer lapses")
    func busyWinnerRedispatched() async throws {
        let race = try await OfferRace(spots: [1, 2, 9])
        defer { race.stop() }
        let (a, b, c) = (race.drivers[0], race.drivers[1], race.drivers[2])

        // Both orders are offered to A and B; A takes the second, so the first still stands for B (and,
        // in the race, for A, who is now on a trip).
        let first = try await race.order()
        try await race.offered(first, to: a)
        try await race.offered(first, to: b)
        let second = try await race.order()
        try await race.offered(second, to: a)
        #expect(try await race.grab(second, by: a).status == 200)
        // A grabs the first too: the race is won, and the order service refuses the busy driver.
        let busy = try await race.grab(first, by: a)
        #expect(busy.status == 409, "\(busy.text)")
        #expect(busy.json["type"] as? String == "urn:hailstorm:problem:driver-busy", "\(busy.text)")
        // The first goes back to dispatch: offered in the next windows to the free drivers nearest,
        // B and C, not two minutes later.
        try await race.offered(first, to: c, timeout: .seconds(15))
        #expect(try await race.grab(first, by: c).status == 200)
        let admin = try await race.platform.admin()
        let assigned = try await race.platform.waitForOrder(first, token: admin.token) { $0["state"] as? String == "assigned" }
        #expect(assigned["driverID"] as? String == c.id)
        // The refused attempt is in the race's audit, with its reason.
        let audit = try await race.platform.send(.GET, "/admin/grabs/\(first)", token: admin.token)
        let attempts = try #require(audit.json["attempts"] as? [[String: Any]], "\(audit.text)")
        #expect(attempts.contains { $0["driverID"] as? String == a.id && $0["outcome"] as? String == "driver-busy" }, "\(attempts)")
    }

    @Test("offer mode: an offer nobody grabbed goes, once it lapses, to the nearest driver not offered it yet")
    func lapsedOfferGoesFurther() async throws {
        let race = try await OfferRace(spots: [1, 2, 9], offerSeconds: 2)
        defer { race.stop() }
        let (a, b, c) = (race.drivers[0], race.drivers[1], race.drivers[2])
        let order = try await race.order()
        try await race.offered(order, to: a)
        try await race.offered(order, to: b)
        // A and B let it pass. Two seconds on it is offered again: A and B are still the nearest, but they
        // had their chance; C, farther, is told now.
        try await race.offered(order, to: c, timeout: .seconds(15))
        #expect(try await race.grab(order, by: c).status == 200)
        let admin = try await race.platform.admin()
        let assigned = try await race.platform.waitForOrder(order, token: admin.token) { $0["state"] as? String == "assigned" }
        #expect(assigned["driverID"] as? String == c.id)
    }

    @Test("offer mode: a grab won while the order service is down is answered with an error to repeat, and the race stays open: once order is back, another driver's grab wins it")
    func winnerWithoutJudgement() async throws {
        let race = try await OfferRace(spots: [1, 2])
        defer { race.stop() }
        let (a, b) = (race.drivers[0], race.drivers[1])
        let order = try await race.order()
        for driver in [a, b] { try await race.offered(order, to: driver) }

        // A wins the race while the order service is down: nobody can say whether A has the order.
        race.platform.order.kill()
        let unjudged = try await race.grab(order, by: a)
        #expect(unjudged.status >= 500, "\(unjudged.text)")
        try await race.platform.order.start()
        // The race was not left won by A: B, still offered it, gets it.
        var won: TestResponse?
        for _ in 0..<40 {
            let grab = try await race.grab(order, by: b)
            if grab.status == 200 { won = grab; break }
            #expect(grab.status >= 500, "B told \(grab.status) \(grab.text)")
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(won != nil, "B never got the order")
        let admin = try await race.platform.admin()
        let assigned = try await race.platform.waitForOrder(order, token: admin.token) { $0["state"] as? String == "assigned" }
        #expect(assigned["driverID"] as? String == b.id)
        #expect(assigned.states.filter { $0 == "assigned" }.count == 1)
        // Both attempts are in the race's audit: A's without a judgement, B's won.
        let audit = try await race.platform.send(.GET, "/admin/grabs/\(order)", token: admin.token)
        let attempts = try #require(audit.json["attempts"] as? [[String: Any]], "\(audit.text)")
        #expect(attempts.contains { $0["driverID"] as? String == a.id && $0["outcome"] as? String == "unjudged" }, "\(attempts)")
        #expect(attempts.contains { $0["driverID"] as? String == b.id && $0["outcome"] as? String == "won" }, "\(attempts)")
    }

    @Test("the order cache: an order read and then changed reads back changed; a change to an order nobody read through it costs Redis nothing")
    func orderCache() async throws {
        let platform = try Platform(order: ["order-cache-ttl-seconds": "1"])
        defer { platform.stopAll() }
        try await platform.start()
        let redis = RedisClient(configuration: .init(port: platform.redisPort, poolSize: 1))
        func deletes() async throws -> Int {
            let info = try #require(try await redis.send("INFO", "commandstats").string)
            guard let line = info.split(separator: "\r\n").first(where: { $0.hasPrefix("cmdstat_del:") }) else { return 0 }
            return Int(line.split(separator: ",")[0].split(separator: "=")[1]) ?? 0
        }
        let rider = try await platform.account("rider")
        func order() async throws -> String {
            let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff])
            return try #require(created.json["id"] as? String, "\(created.text)")
        }
        // For the cache's lifetime after order starts (a second here, and one for clocks), every change
        // deletes its entry: an earlier process may have filled it.
        try await Task.sleep(for: .seconds(2.5))

        let unread = try await order()
        let before = try await deletes()
        let cancelled = try await platform.send(.POST, "/rides/\(unread)/cancel", token: rider.token, body: ["reason": "changed my mind"])
        #expect(cancelled.status == 200, "\(cancelled.text)")
        #expect(try await deletes() == before, "a change to an order nobody read sent a DEL")

        let read = try await order()
        #expect(try await platform.send(.GET, "/rides/\(read)", token: rider.token).json["state"] as? String == "created")
        #expect(try await redis.send("EXISTS", "order:cache:\(read)").int == 1, "the read filled the cache")
        #expect(try await platform.send(.POST, "/rides/\(read)/cancel", token: rider.token, body: ["reason": "too slow"]).status == 200)
        #expect(try await redis.send("EXISTS", "order:cache:\(read)").int == 0, "the change left the cached order")
        #expect(try await platform.send(.GET, "/rides/\(read)", token: rider.token).json["state"] as? String == "cancelled")
        await redis.shutdown()
    }

    @Test("matching killed with SIGKILL: it comes back with a driver where its last copied fix put it; orders created while it was down are dispatched when it is back; orders waiting through a crash are dispatched or expire, none twice")
    func matchingCrash() async throws {
        let platform = try Platform(order: ["order-expiry-seconds": "25"])
        defer { platform.stopAll() }
        try await platform.start()
        let rider = try await platform.account("rider")
        var drivers: [(id: String, token: String)] = []
        for i in 0..<3 {
            let driver = try await platform.account("driver")
            try #require(try await platform.send(.POST, "/driver/online", token: driver.token, body: near(i * 7)).status == 200)
            drivers.append(driver)
        }

        // The first driver moves; its fix is copied to Redis within `matching.fix.copy.ms` (100) and so
        // survives the crash below: the restarted matching has the driver where it last reported.
        let moved = near(55)
        // A driver near the pole is a valid fix that Redis's GEO sets refuse (beyond ±85.05°): it goes
        // online, and its fixes do not hold up the other drivers' copies.
        let polar = try await platform.account("driver")
        let polarOnline = try await platform.send(.POST, "/driver/online", token: polar.token, body: ["lat": 89.0, "lon": 0.0])
        #expect(polarOnline.status == 200, "\(polarOnline.text)")
        let polarFix = try await platform.send(.POST, "/driver/locations", token: polar.token, body: ["points": [["lat": 89.5, "lon": 10.0]]])
        #expect(polarFix.status == 200, "\(polarFix.text)")
        let fix = try await platform.send(.POST, "/driver/locations", token: drivers[0].token, body: ["points": [moved]])
        #expect(fix.status == 200, "\(fix.text)")
        try await Task.sleep(for: .milliseconds(500))

        // Matching is down while three orders come in: their events wait on the stream.
        platform.matching.kill()
        var first: [String] = []
        for _ in 0..<3 {
            let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff])
            #expect(created.status == 201, "orders are accepted while matching is down: \(created.text)")
            first.append(try #require(created.json["id"] as? String))
        }
        try await platform.matching.start()
        let status = try await platform.send(.GET, "/driver/status", token: drivers[0].token)
        // Redis keeps positions as geohashes: equal to about a metre (the fix before was 250 m away).
        let restoredLat = try #require(status.json["lat"] as? Double, "\(status.text)")
        let restoredLon = try #require(status.json["lon"] as? Double, "\(status.text)")
        #expect(abs(restoredLat - (moved["lat"] as! Double)) < 1e-5 && abs(restoredLon - (moved["lon"] as! Double)) < 1e-5, "\(status.text)")
        var assignedDrivers: [String] = []
        for id in first {
            let order = try await platform.waitForOrder(id, token: rider.token) { $0["state"] as? String == "assigned" }
            assignedDrivers.append(try #require(order["driverID"] as? String))
        }
        #expect(Set(assignedDrivers) == Set(drivers.map(\.id)), "three orders, three different drivers")

        // Every driver is busy: four more orders wait in matching, which crashes and comes back.
        var waiting: [String] = []
        for _ in 0..<4 {
            let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff])
            waiting.append(try #require(created.json["id"] as? String))
        }
        // Killed once matching holds all four (they wait there: every driver is busy).
        let admin = try await TestKeys.userToken("admin-stats", role: .admin)
        var inMatching = 0
        let heldBy = ContinuousClock.now + .seconds(20)
        while inMatching < 4, ContinuousClock.now < heldBy {
            let stats = try await testRequest(.GET, platform.matching.baseURL + "/v1/stats", headers: ["Authorization": "Bearer \(admin)"])
            inMatching = stats.json["ordersWaiting"] as? Int ?? 0
            if inMatching < 4 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(inMatching == 4, "matching holds the four waiting orders before it crashes")
        platform.matching.kill()
        try await platform.matching.start()

        // Two trips end, so two drivers are free again: two waiting orders get them, the rest expire.
        for (orderID, driverID) in zip(first, assignedDrivers).prefix(2) {
            let token = try #require(drivers.first { $0.id == driverID }).token
            for verb in ["arrive", "start", "complete"] {
                #expect(try await platform.send(.POST, "/driver/rides/\(orderID)/\(verb)", token: token).status == 200)
            }
        }
        var finals: [String: Int] = [:]
        for id in waiting {
            let order = try await platform.waitForOrder(id, token: rider.token, timeout: .seconds(60)) {
                ["assigned", "expired"].contains($0["state"] as? String ?? "")
            }
            finals[order["state"] as! String, default: 0] += 1
            #expect(order.states.filter { $0 == "assigned" }.count <= 1)
        }
        #expect(finals["assigned"] == 2, "\(finals)")
        #expect(finals["expired"] == 2, "\(finals)")
        // Nothing was assigned twice, and no driver holds two trips.
        let page = try await platform.send(.GET, "/rides?limit=100", token: rider.token)
        let all = try #require(page.json["orders"] as? [[String: Any]])
        let held = all.filter { ["assigned", "arriving", "in_trip"].contains($0["state"] as? String ?? "") }.compactMap { $0["driverID"] as? String }
        #expect(held.count == Set(held).count)
        #expect(all.allSatisfy { $0["state"] as? String != "created" })
    }

    @Test("an operator suspends a driver: their standing offer can no longer be grabbed, new orders go to others, going online is refused; restored, they are dispatched again")
    func suspendedDriver() async throws {
        let platform = try Platform(matching: [
            "matching-dispatch-mode": "offer", "matching-offer-drivers": "2", "matching-offer-seconds": "120",
            "matching-window-ms": "200",
        ])
        defer { platform.stopAll() }
        try await platform.start()
        var drivers: [(id: String, token: String, pushes: PushInbox)] = []
        for (index, spot) in [1, 9].enumerated() {
            let driver = try await platform.account("driver", name: "Driver \(index)")
            let online = try await platform.send(.POST, "/driver/online", token: driver.token, body: near(spot))
            try #require(online.status == 200, "\(online.text)")
            drivers.append((driver.id, driver.token, try await PushInbox.connect(platform, token: driver.token)))
        }
        defer { for driver in drivers { driver.pushes.close() } }
        let (a, b) = (drivers[0], drivers[1])
        let admin = try await platform.admin()
        func order() async throws -> String {
            let rider = try await platform.account("rider")
            let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff])
            return try #require(created.json["id"] as? String, "\(created.text)")
        }
        func offered(_ order: String, to driver: (id: String, token: String, pushes: PushInbox)) async throws {
            _ = try await driver.pushes.waitFor(timeout: .seconds(20)) {
                $0["type"] as? String == "order.offered" && $0["orderID"] as? String == order
            }
        }

        let first = try await order()
        try await offered(first, to: a)
        try await offered(first, to: b)
        let suspended = try await platform.send(.POST, "/admin/dispatch/drivers/\(a.id)/suspend", token: admin.token)
        #expect(suspended.status == 200, "\(suspended.text)")
        #expect(suspended.json["state"] as? String == "suspended")
        #expect(try await platform.send(.POST, "/admin/dispatch/drivers/\(a.id)/suspend", token: admin.token).json["state"] as? String == "suspended",
            "suspending again changes nothing")
        // The offer A held is withdrawn in order-grab too: A cannot grab it, B still can.
        let grabbed = try await platform.send(.POST, "/driver/offers/\(first)/grab", token: a.token)
        #expect(grabbed.status == 403, "\(grabbed.text)")
        let online = try await platform.send(.POST, "/driver/online", token: a.token, body: near(1))
        #expect(online.status == 409 && online.json["type"] as? String == "urn:hailstorm:problem:driver-suspended", "\(online.text)")
        #expect(try await platform.send(.GET, "/driver/status", token: a.token).json["state"] as? String == "suspended")
        // A new order, nearest to A, is offered to B alone.
        let second = try await order()
        try await offered(second, to: b)
        try await Task.sleep(for: .milliseconds(600))
        #expect(!a.pushes.messages.contains { $0["orderID"] as? String == second && $0["type"] as? String == "order.offered" })
        #expect(try await platform.send(.POST, "/driver/offers/\(second)/grab", token: a.token).status == 403)

        let restored = try await platform.send(.POST, "/admin/dispatch/drivers/\(a.id)/restore", token: admin.token)
        #expect(restored.json["state"] as? String == "available", "\(restored.text)")
        let third = try await order()
        try await offered(third, to: a)
        #expect(try await platform.send(.POST, "/driver/offers/\(third)/grab", token: a.token).status == 200)
        // Refused: a driver suspending anyone, themselves included.
        #expect(try await platform.send(.POST, "/admin/dispatch/drivers/\(b.id)/suspend", token: a.token).status == 403)
    }

    @Test("drivers' fixes sent at once are gathered by the gateway into few calls to matching; each driver gets its own answer, a bad fix its own 400, and matching has every driver where their latest fix puts them")
    func gatheredFixes() async throws {
        let platform = try Platform()
        defer { platform.stopAll() }
        try await platform.start()
        var drivers: [(id: String, token: String)] = []
        for _ in 0..<30 { drivers.append(try await platform.account("driver")) }
        let stray = try await platform.account("driver")
        // Three rounds of every driver at once, each fix two points, the later one the latest; the stray
        // driver's first point is off the globe.
        for round in 0..<3 {
            let answers = try await withThrowingTaskGroup(of: (Int, TestResponse).self) { group in
                for (index, driver) in drivers.enumerated() {
                    let latest = near(index + round)
                    group.addTask {
                        (index, try await platform.send(.POST, "/driver/locations", token: driver.token, body: [
                            "points": [["lat": latest["lat"]!, "lon": latest["lon"]!, "at": 1_800_000_000 + round], near(50)],
                        ]))
                    }
                }
                group.addTask {
                    (-1, try await platform.send(.POST, "/driver/locations", token: stray.token, body: ["points": [["lat": 95.0, "lon": 13.4], near(0)]]))
                }
                var answers: [Int: TestResponse] = [:]
                for try await (index, answer) in group { answers[index] = answer }
                return answers
            }
            for index in drivers.indices {
                #expect(answers[index]?.status == 200, "\(answers[index]?.text ?? "no answer")")
                #expect(answers[index]?.json["accepted"] as? Int == 2)
            }
            let refused = try #require(answers[-1])
            #expect(refused.status == 400, "\(refused.text)")
            #expect(refused.json["field"] as? String == "points[0]", "\(refused.text)")
            #expect(refused.json["requestId"] as? String != nil, "the problem names the driver's own request: \(refused.text)")
        }
        // Matching has each driver at its latest fix (the one with a time, not the one sent last).
        for (index, driver) in drivers.enumerated() {
            let status = try await platform.send(.GET, "/driver/status", token: driver.token)
            let latest = near(index + 2)
            let lat = try #require(status.json["lat"] as? Double, "\(status.text)")
            let lon = try #require(status.json["lon"] as? Double)
            #expect(abs(lat - (latest["lat"] as! Double)) < 1e-4 && abs(lon - (latest["lon"] as! Double)) < 1e-4, "\(status.text)")
        }
        #expect(try await platform.send(.GET, "/driver/status", token: stray.token).json["lat"] == nil, "a refused fix moves nobody")
        // The fixes on connections the gateway had seen before went to matching together.
        let metrics = try await testRequest(.GET, platform.gateway.baseURL + "/metrics").text
        func value(_ name: String) -> Double {
            metrics.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) } ?? 0
        }
        let gathered = value("hailstorm_gateway_fixes_gathered_total")
        let batches = value("hailstorm_gateway_fix_batches_total")
        #expect(gathered >= 31, "the later rounds' fixes are gathered: \(gathered)")
        #expect(batches > 0 && batches * 3 <= gathered, "\(gathered) fixes in \(batches) calls")
    }

    @Test("a driver whose app stops sending fixes is taken offline and not dispatched")
    func staleDriver() async throws {
        let platform = try Platform(matching: ["matching-driver-stale-seconds": "2"])
        defer { platform.stopAll() }
        try await platform.start()
        let driver = try await platform.account("driver")
        let online = try await platform.send(.POST, "/driver/online", token: driver.token, body: near(0))
        #expect(online.json["state"] as? String == "available")
        // Fixes keep it available past the limit...
        for _ in 0..<4 {
            try await Task.sleep(for: .milliseconds(800))
            _ = try await platform.send(.POST, "/driver/locations", token: driver.token, body: ["points": [near(1)]])
        }
        #expect(try await platform.send(.GET, "/driver/status", token: driver.token).json["state"] as? String == "available")
        // ...silence does not: offline once the sweep finds no fix for 2 s.
        var status = try await platform.send(.GET, "/driver/status", token: driver.token)
        let sweptBy = ContinuousClock.now + .seconds(15)
        while status.json["state"] as? String != "offline", ContinuousClock.now < sweptBy {
            try await Task.sleep(for: .milliseconds(200))
            status = try await platform.send(.GET, "/driver/status", token: driver.token)
        }
        #expect(status.json["state"] as? String == "offline", "\(status.text)")
        let rider = try await platform.account("rider")
        let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff])
        let orderID = try #require(created.json["id"] as? String)
        try await Task.sleep(for: .seconds(2))
        let order = try await platform.send(.GET, "/rides/\(orderID)", token: rider.token)
        #expect(order.json["state"] as? String == "created")
    }
}

/// A platform dispatching in offer mode to the two nearest drivers, offers standing two minutes (anything
/// faster than that is the platform acting, not the offer lapsing), with a driver online at each of
/// `spots` (`near(spot)`), each listening to its pushes.
struct OfferRace {
    typealias Driver = (id: String, token: String, pushes: PushInbox)
    let platform: Platform
    let drivers: [Driver]

    init(spots: [Int], offerSeconds: Int = 120) async throws {
        platform = try Platform(matching: [
            "matching-dispatch-mode": "offer", "matching-offer-drivers": "2", "matching-offer-seconds": String(offerSeconds),
            "matching-window-ms": "200",
        ])
        var drivers: [Driver] = []
        do {
            try await platform.start()
            for (index, spot) in spots.enumerated() {
                let driver = try await platform.account("driver", name: "Driver \(index)")
                let online = try await platform.send(.POST, "/driver/online", token: driver.token, body: near(spot))
                try #require(online.status == 200, "\(online.text)")
                drivers.append((driver.id, driver.token, try await PushInbox.connect(platform, token: driver.token)))
            }
        } catch {
            for driver in drivers { driver.pushes.close() }
            platform.stopAll()
            throw error
        }
        self.drivers = drivers
    }

    func stop() {
        for driver in drivers { driver.pushes.close() }
        platform.stopAll()
    }

    /// A new rider's order from `pickup` to `dropoff`.
    func order() async throws -> String {
        let rider = try await platform.account("rider")
        let created = try await platform.send(.POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff])
        return try #require(created.json["id"] as? String, "\(created.text)")
    }

    /// Waits until `driver` is pushed the offer of `order`.
    func offered(_ order: String, to driver: Driver, timeout: Duration = .seconds(20)) async throws {
        _ = try await driver.pushes.waitFor(timeout: timeout) {
            $0["type"] as? String == "order.offered" && $0["orderID"] as? String == order
        }
    }

    func grab(_ order: String, by driver: Driver) async throws -> TestResponse {
        try await platform.send(.POST, "/driver/offers/\(order)/grab", token: driver.token)
    }
}
