import Contracts
import Foundation
import HailKitTesting
import Testing

extension Platform {
    /// A driver online near the pickup takes a new order of `rider` through to `completed`; returns the
    /// order's id and fare. `beforeCompletion` runs once the trip has started.
    func completedRide(
        rider: (id: String, token: String), driver: (id: String, token: String),
        beforeCompletion: (String) async throws -> Void = { _ in }
    ) async throws -> (id: String, fare: Int) {
        let online = try await send(.POST, "/driver/online", token: driver.token, body: near(2))
        try #require(online.status == 200, "\(online.text)")
        let created = try await send(
            .POST, "/rides", token: rider.token, body: ["pickup": pickup, "dropoff": dropoff], idempotencyKey: UUID().uuidString)
        try #require(created.status == 201, "\(created.text)")
        let id = try #require(created.json["id"] as? String)
        _ = try await waitForOrder(id, token: rider.token) { $0["state"] as? String == "assigned" }
        for verb in ["arrive", "start"] {
            let moved = try await send(.POST, "/driver/rides/\(id)/\(verb)", token: driver.token)
            try #require(moved.status == 200, "\(verb): \(moved.text)")
        }
        try await beforeCompletion(id)
        let done = try await send(.POST, "/driver/rides/\(id)/complete", token: driver.token)
        try #require(done.status == 200, "\(done.text)")
        return (id, try #require(done.json["fareCents"] as? Int))
    }

    /// A running coupon campaign (amount off) and one coupon of it in `rider`'s wallet; returns the coupon.
    /// A campaign of `centsOff` created and claimed by `rider`: the claim's id. With coupon split into
    /// shards, the campaign is created on `shard` (the gateway places a new campaign by its
    /// Idempotency-Key; one is chosen that lands there).
    func coupon(for rider: (id: String, token: String), admin: String, centsOff: Int, shard: Int? = nil) async throws -> String {
        let now = Date().timeIntervalSince1970
        let campaign = try await send(.POST, "/admin/coupons/campaigns", token: admin, body: [
            "name": "Ride money test", "city": "Berlin", "kind": "amount", "amountOffCents": centsOff,
            "minimumFareCents": 0, "stock": 10, "perUserLimit": 1, "startsAt": now - 1, "endsAt": now + 3600,
        ], idempotencyKey: shard.map { campaignKey(onShard: $0) })
        try #require(campaign.status == 201, "\(campaign.text)")
        let campaignID = try #require(campaign.json["id"] as? String)
        let claim = try await send(.POST, "/coupons/campaigns/\(campaignID)/claim", token: rider.token)
        try #require(claim.status == 201, "\(claim.text)\ncoupon's log:\n\(self.coupon?.output().suffix(3000) ?? "")")
        let couponID = try #require(claim.json["claimID"] as? String)
        _ = try await waitForCoupon(couponID, of: rider) { _ in true }
        return couponID
    }

    /// An Idempotency-Key whose campaign the gateway creates on `shard` of coupon.
    func campaignKey(onShard shard: Int) -> String {
        var key = UUID().uuidString
        while Shards.shard(forKey: key, count: coupons.count) != shard { key = UUID().uuidString }
        return key
    }

    /// Polls the rider's wallet until the coupon is there and `done` holds for its state.
    func waitForCoupon(
        _ id: String, of rider: (id: String, token: String), until done: (String) -> Bool
    ) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(15)
        var state = "absent"
        while ContinuousClock.now < deadline {
            let wallet = try await send(.GET, "/coupons/wallet", token: rider.token)
            let coupons = (wallet.json["coupons"] as? [[String: Any]]) ?? []
            state = coupons.first { $0["claimID"] as? String == id }?["state"] as? String ?? "absent"
            if state != "absent", done(state) { return state }
            try await Task.sleep(for: .milliseconds(100))
        }
        return state
    }

    func ledger(_ admin: String) async throws -> [String: Any] {
        let ledger = try await send(.GET, "/admin/ledger", token: admin)
        try #require(ledger.status == 200, "\(ledger.text)")
        return ledger.json
    }

    /// Polls the reconciliation report until `done` holds (settlement reads the streams asynchronously).
    func reconciliation(_ admin: String, until done: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + .seconds(20)
        var last: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            let report = try await send(.GET, "/admin/reconciliation", token: admin)
            try #require(report.status == 200, "\(report.text)")
            last = report.json
            if done(last) { return last }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("the report did not get there; last \(last)")
        return last
    }
}

extension [String: Any] {
    func balance(of account: String) -> Int {
        ((self["accounts"] as? [[String: Any]]) ?? []).first { $0["account"] as? String == account }?["balanceCents"] as? Int ?? 0
    }

    var mismatches: [[String: Any]] { (self["mismatches"] as? [[String: Any]]) ?? [] }
}

@Suite("money: paying rides with coupons, the ledger, refunds, settlement and reconciliation", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .serialized, .timeLimit(.minutes(5)))
struct MoneyFlowTests {
    @Test(
        "payment: a declined charge leaves the ride unpaid and the coupon in the wallet; 50 requests with one key charge once; the ledger balances; a refund reverses it — on one Redis, and on a six-node Redis Cluster with order in three shards, coupon and payment in two",
        arguments: [false, true])
    func payment(onCluster: Bool) async throws {
        // The sandbox takes 300 ms per charge, so the 50 requests overlap the one in flight.
        let platform = try Platform(
            money: true, payment: ["payment-sandbox-latency-ms": "300", "payment-commission-percent": "20"], redisCluster: onCluster,
            orderShards: onCluster ? 3 : 1, couponShards: onCluster ? 2 : 1, paymentShards: onCluster ? 2 : 1)
        defer { platform.stopAll() }
        try await platform.start()
        let admin = try await platform.admin().token
        let rider = try await platform.account("rider", name: "Paula")
        let driver = try await platform.account("driver", name: "Pedro")
        // Split, the coupon is coupon's second shard's: payment redeems it and gives it back there.
        let couponID = try await platform.coupon(for: rider, admin: admin, centsOff: 300, shard: onCluster ? 1 : nil)
        #expect(couponID.hasPrefix("s1-") == onCluster, "a split coupon service's claim ids name their shard: \(couponID)")

        let (orderID, fare) = try await platform.completedRide(rider: rider, driver: driver) { id in
            // A ride not yet completed cannot be paid.
            let early = try await platform.send(.POST, "/payments", token: rider.token, body: ["orderID": id], idempotencyKey: UUID().uuidString)
            #expect(early.status == 409, "\(early.text)")
            #expect(early.json["type"] as? String == "urn:hailstorm:problem:order-not-payable")
        }
        let noKey = try await platform.send(.POST, "/payments", token: rider.token, body: ["orderID": orderID])
        #expect(noKey.status == 400, "a payment without an Idempotency-Key: \(noKey.text)")
        #expect(noKey.json["field"] as? String == "Idempotency-Key")

        // The provider declines: the ride stays unpaid, the coupon goes back, the same key answers the same.
        let declineKey = UUID().uuidString
        let declinedBody: [String: Any] = ["orderID": orderID, "couponID": couponID, "paymentMethod": "sandbox-decline"]
        let declined = try await platform.send(.POST, "/payments", token: rider.token, body: declinedBody, idempotencyKey: declineKey)
        #expect(declined.status == 402, "\(declined.text)")
        #expect(declined.json["type"] as? String == "urn:hailstorm:problem:payment-declined")
        let declinedAgain = try await platform.send(.POST, "/payments", token: rider.token, body: declinedBody, idempotencyKey: declineKey)
        #expect(declinedAgain.status == 402)
        #expect(declinedAgain.json["detail"] as? String == declined.json["detail"] as? String)
        let unpaid = try await platform.send(.GET, "/rides/\(orderID)", token: rider.token)
        #expect(unpaid.json["state"] as? String == "completed")
        #expect(try await platform.waitForCoupon(couponID, of: rider) { $0 == "available" } == "available")
        #expect(try await platform.ledger(admin)["entries"] as? Int == 0, "a declined payment writes no ledger entry")

        // 50 requests with one key at once: one payment, one charge.
        let key = UUID().uuidString
        let answers = try await withThrowingTaskGroup(of: TestResponse.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await platform.send(
                        .POST, "/payments", token: rider.token, body: ["orderID": orderID, "couponID": couponID], idempotencyKey: key)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(answers.map(\.status) == Array(repeating: 201, count: 50), "\(answers.filter { $0.status != 201 }.map(\.text).prefix(3))")
        #expect(Set(answers.compactMap { $0.json["id"] as? String }).count == 1, "every answer names the same payment")
        let payment = try #require(answers.first?.json)
        let paymentID = try #require(payment["id"] as? String)
        #expect(payment["state"] as? String == "succeeded")
        #expect(payment["amountCents"] as? Int == fare - 300)
        #expect(payment["discountCents"] as? Int == 300)
        let commission = (fare * 20 + 50) / 100

        var books = try await platform.ledger(admin)
        #expect(books["totalCents"] as? Int == 0)
        #expect((books["unbalancedPayments"] as? [String])?.isEmpty == true)
        #expect(books.balance(of: "rider:\(rider.id)") == -(fare - 300), "the rider was charged once")
        #expect(books.balance(of: "driver:\(driver.id)") == fare - commission)
        #expect(books.balance(of: "platform:commission") == commission)
        #expect(books.balance(of: "platform:coupon-subsidy") == -300)
        #expect(try await platform.waitForCoupon(couponID, of: rider) { $0 == "redeemed" } == "redeemed")
        _ = try await platform.waitForOrder(orderID, token: rider.token) { $0["state"] as? String == "paid" }

        let twice = try await platform.send(.POST, "/payments", token: rider.token, body: ["orderID": orderID], idempotencyKey: UUID().uuidString)
        #expect(twice.status == 409, "a second payment with another key: \(twice.text)")
        let stranger = try await platform.account("rider", name: "Stranger")
        #expect(try await platform.send(.GET, "/payments/\(paymentID)", token: stranger.token).status == 403)
        #expect(try await platform.send(.GET, "/payments/\(paymentID)", token: driver.token).status == 200)

        // A refund reverses every entry, once.
        #expect(try await platform.send(.POST, "/admin/payments/\(paymentID)/refund", token: rider.token, body: ["reason": "mine"]).status == 403)
        let refund = try await platform.send(.POST, "/admin/payments/\(paymentID)/refund", token: admin, body: ["reason": "driver took a detour"])
        #expect(refund.status == 200, "\(refund.text)")
        #expect(refund.json["state"] as? String == "refunded")
        let entries = (refund.json["entries"] as? [[String: Any]]) ?? []
        let paid = entries.filter { $0["kind"] as? String == "payment" }
        let reversed = entries.filter { $0["kind"] as? String == "refund" }
        #expect(paid.count == 4 && reversed.count == 4)
        for entry in paid {
            let undo = reversed.first { $0["account"] as? String == entry["account"] as? String }
            #expect(undo?["amountCents"] as? Int == -((entry["amountCents"] as? Int) ?? 0))
        }
        let refundAgain = try await platform.send(.POST, "/admin/payments/\(paymentID)/refund", token: admin, body: ["reason": "again"])
        #expect(refundAgain.status == 200)
        books = try await platform.ledger(admin)
        #expect(books["totalCents"] as? Int == 0)
        #expect(books["entries"] as? Int == 8, "the second refund changed nothing")
        #expect(books.balance(of: "rider:\(rider.id)") == 0)
        #expect(books.balance(of: "driver:\(driver.id)") == 0)
    }

    @Test("a payment cut off by a crash mid-charge is settled after restart from the provider's books: the same key gets the answer, the coupon comes back")
    func crashMidCharge() async throws {
        let platform = try Platform(
            money: true, payment: ["payment-sandbox-latency-ms": "4000", "payment-recovery-after-seconds": "5"])
        defer { platform.stopAll() }
        try await platform.start()
        let admin = try await platform.admin().token
        let rider = try await platform.account("rider", name: "Cora")
        let driver = try await platform.account("driver", name: "Cid")
        let couponID = try await platform.coupon(for: rider, admin: admin, centsOff: 100)
        let ride = try await platform.completedRide(rider: rider, driver: driver)
        let payment = try #require(platform.payment)

        let key = UUID().uuidString
        let first = Task {
            try await platform.send(.POST, "/payments", token: rider.token, body: ["orderID": ride.id, "couponID": couponID], idempotencyKey: key)
        }
        // The payment is written and the coupon redeemed; the charge is still with the provider.
        #expect(try await platform.waitForCoupon(couponID, of: rider) { $0 == "redeemed" } == "redeemed")
        payment.kill()
        _ = try? await first.value
        try await payment.start()

        let deadline = ContinuousClock.now + .seconds(40)
        var answer = try await platform.send(.POST, "/payments", token: rider.token, body: ["orderID": ride.id, "couponID": couponID], idempotencyKey: key)
        while answer.status == 409 || answer.status >= 500, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(500))
            answer = try await platform.send(.POST, "/payments", token: rider.token, body: ["orderID": ride.id, "couponID": couponID], idempotencyKey: key)
        }
        #expect(answer.status == 402, "nothing was charged, so the payment failed: \(answer.text)")
        #expect((answer.json["detail"] as? String)?.contains("interrupted") == true)
        #expect(try await platform.waitForCoupon(couponID, of: rider) { $0 == "available" } == "available")
        #expect(try await platform.ledger(admin)["entries"] as? Int == 0)
        let order = try await platform.send(.GET, "/rides/\(ride.id)", token: rider.token)
        #expect(order.json["state"] as? String == "completed")
    }

    @Test(
        "settlement: two batches at once pay each entry once, a third pays nothing, the report is clean, then lists an unpaid ride and an injected bad payment — on one Redis, and on a six-node Redis Cluster with order in three shards, coupon and payment in two",
        arguments: [false, true])
    func settlement(onCluster: Bool) async throws {
        let platform = try Platform(
            money: true, payment: ["payment-sandbox-latency-ms": "10"], redisCluster: onCluster,
            orderShards: onCluster ? 3 : 1, couponShards: onCluster ? 2 : 1, paymentShards: onCluster ? 2 : 1)
        defer { platform.stopAll() }
        try await platform.start()
        let admin = try await platform.admin().token
        // Payment split: a rider on each shard, so the driver's earnings are on both and the books summed.
        var riders: [Int: (id: String, token: String)] = [:]
        for _ in 0..<40 where riders.count < platform.payments.count {
            let rider = try await platform.account("rider", name: "Sam")
            let shard = Shards.shard(forKey: rider.id, count: platform.payments.count)
            riders[shard] = riders[shard] ?? rider
        }
        try #require(riders.count == platform.payments.count, "40 riders and not one on each shard")
        let rider = try #require(riders[0])
        let driver = try await platform.account("driver", name: "Dora")
        var expected = 0
        for index in 0..<2 {
            let payer = riders[index % riders.count] ?? rider
            let ride = try await platform.completedRide(rider: payer, driver: driver)
            let paid = try await platform.send(.POST, "/payments", token: payer.token, body: ["orderID": ride.id], idempotencyKey: UUID().uuidString)
            try #require(paid.status == 201, "\(paid.text)")
            if platform.payments.count > 1 {
                #expect((paid.json["id"] as? String)?.hasPrefix("s\(index % riders.count)-") == true, "a payment on its rider's shard: \(paid.text)")
            }
            expected += ride.fare - (ride.fare * 20 + 50) / 100
        }
        let earned = try await platform.ledger(admin).balance(of: "driver:\(driver.id)")
        #expect(earned == expected, "the driver earns each fare less 20% commission")
        let clean = try await platform.reconciliation(admin) { $0["payments"] as? Int == 2 && $0["completedOrders"] as? Int == 2 }
        #expect(clean.mismatches.isEmpty, "a clean run reconciles: \(clean.mismatches)")
        #expect(clean["driverEarningsCents"] as? Int == earned)

        // Two runs at once.
        async let first = platform.send(.POST, "/admin/settlements/run", token: admin)
        async let second = platform.send(.POST, "/admin/settlements/run", token: admin)
        let runs = try await [first, second]
        #expect(runs.map(\.status) == [201, 201], "\(runs.map(\.text))")
        #expect(runs.compactMap { $0.json["entries"] as? Int }.reduce(0, +) == 2, "each driver entry paid once: \(runs.map(\.text))")
        #expect(runs.compactMap { $0.json["totalCents"] as? Int }.reduce(0, +) == earned)
        let payouts = runs.flatMap { ($0.json["payouts"] as? [[String: Any]]) ?? [] }
        #expect(payouts.count == 1)
        #expect(payouts.first?["driverID"] as? String == driver.id)
        let third = try await platform.send(.POST, "/admin/settlements/run", token: admin)
        #expect(third.json["entries"] as? Int == 0 && third.json["totalCents"] as? Int == 0, "nothing left: \(third.text)")
        #expect(try await platform.send(.POST, "/admin/settlements/run", token: rider.token).status == 403)

        let settled = try await platform.reconciliation(admin) { _ in true }
        #expect(settled.mismatches.isEmpty, "\(settled.mismatches)")
        #expect(settled["paidOutCents"] as? Int == earned)
        #expect(settled["unsettledCents"] as? Int == 0)

        // A ride completed and never paid (the grace period is 0 here) is listed.
        let unpaid = try await platform.completedRide(rider: rider, driver: driver)
        let listed = try await platform.reconciliation(admin) { report in
            report.mismatches.contains { $0["kind"] as? String == "completed-not-paid" && $0["orderID"] as? String == unpaid.id }
        }
        #expect(listed.mismatches.count == 1, "\(listed.mismatches)")

        // A payment event no order explains, charging more than its fare less discount, is listed too.
        let bogus = PaymentEvents.Succeeded(
            paymentID: "injected-\(UUID().uuidString)", orderID: "no-such-order", riderID: rider.id, driverID: driver.id,
            fareCents: 1000, discountCents: 0, amountCents: 1500, commissionCents: 200, couponID: nil,
            entries: [], at: Date().timeIntervalSince1970)
        try platform.inject(bogus, type: PaymentEvents.Succeeded.type)
        let injected = try await platform.reconciliation(admin) { report in
            report.mismatches.contains { $0["kind"] as? String == "paid-not-completed" }
        }
        let kinds = Set(injected.mismatches.compactMap { $0["kind"] as? String })
        #expect(kinds == ["completed-not-paid", "paid-not-completed", "amount-mismatch"], "\(injected.mismatches)")
    }
}

extension Platform {
    /// Puts an event on its stream the way a misbehaving service would (redis-cli XADD).
    func inject<E: DomainEvent>(_ event: E, type: String) throws {
        let payload = String(decoding: try JSONEncoder().encode(event), as: UTF8.self)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        process.arguments = [
            "-p", String(redisPort), "-c", "XADD", "events:\(E.stream)", "*", "id", UUID().uuidString.lowercased(), "type", type,
            "source", "injected", "at", String(Date().timeIntervalSince1970), "payload", payload,
        ]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestProcessError("redis-cli XADD failed") }
    }
}
