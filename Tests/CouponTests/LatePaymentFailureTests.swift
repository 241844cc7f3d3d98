import AsyncHTTPClient
import Contracts
import EventBus
import Foundation
import HailKit
import HailKitTesting
import RedisKit
import Testing

/// A rider's first payment fails (the coupon comes back), the second succeeds with the same coupon; then
/// the first payment's `payment.failed` is delivered again. The coupon must stay redeemed: otherwise the
/// rider has it back in the wallet after riding with it. Coupon runs on a Redis of its own here, and the
/// test writes the payment stream as the payment service would.
@Suite("A payment failure delivered late", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"))
struct LatePaymentFailureTests {
    @Test("a late payment.failed does not give back a coupon that a later payment of the same order redeemed")
    func latePaymentFailed() async throws {
        let redis = try RedisServerProcess()
        let events = RedisClient(configuration: .init(port: redis.port, poolSize: 1))
        let prefix = TestEnvironment.unique("coupon-late")
        let coupon = try ServiceProcess(
            "coupon", redisPort: redis.port, discoveryPrefix: "/\(prefix)",
            options: ["coupon-claims-reclaim-seconds": "1", "log-level": "warning"])
        defer {
            coupon.kill()
            redis.kill()
        }
        try await coupon.start()
        let client = HTTPClient.shared

        let crowd = try await Crowd(riders: 1)
        let (rider, riderToken) = crowd.riders[0]
        let service = try await TestKeys.tokens(as: "payment", service: "payment").serviceToken(for: "coupon", lifetime: 600)
        func claimCoupon() async throws -> String {
            let now = Date().timeIntervalSince1970
            let created = try await send(
                client, .POST, coupon.baseURL + "/v1/campaigns", token: crowd.admin,
                body: CouponAPI.NewCampaign(
                    name: "Late failure", city: "test", kind: .amount, amountOffCents: 500, stock: 10, perUserLimit: 1,
                    startsAt: now - 1, endsAt: now + 3600))
            let campaign = try #require(created.json["id"] as? String, "\(String(decoding: created.body, as: UTF8.self))")
            let claimed = try await send(client, .POST, coupon.baseURL + "/v1/campaigns/\(campaign)/claim", token: riderToken)
            try #require(claimed.status == 201, "\(String(decoding: claimed.body, as: UTF8.self))")
            return try #require(claimed.json["claimID"] as? String)
        }
        let claim = try await claimCoupon()
        let markerClaim = try await claimCoupon()

        func redeem(_ claim: String, order: String = "order-1", payment: String) async throws -> Answer {
            // The claim reaches coupon's SQLite from the claims stream a moment after it is granted.
            let deadline = ContinuousClock.now + .seconds(20)
            while true {
                let answer = try await send(
                    client, .POST, coupon.baseURL + "/v1/coupons/\(claim)/redeem", token: service,
                    body: CouponAPI.RedeemRequest(userID: rider, orderID: order, fareCents: 2000, paymentID: payment))
                if answer.status != 404 || ContinuousClock.now > deadline { return answer }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        func state(_ claim: String) async throws -> String? {
            let wallet = try await send(client, .GET, coupon.baseURL + "/v1/wallet", token: riderToken)
            let coupons = wallet.json["coupons"] as? [[String: Any]] ?? []
            return coupons.first { $0["claimID"] as? String == claim }?["state"] as? String
        }

        let first = try await redeem(claim, payment: "pay-1")
        try #require(first.status == 200, "\(String(decoding: first.body, as: UTF8.self))")

        // Payment 1 fails: coupon gives it back (the payment service's direct call).
        let released = try await send(
            client, .POST, coupon.baseURL + "/v1/coupons/\(claim)/release", token: service,
            body: CouponAPI.ReleaseRequest(orderID: "order-1", paymentID: "pay-1"))
        #expect(released.status == 200)
        #expect(try await state(claim) == "available")

        // Payment 2 redeems it again and succeeds.
        #expect(try await redeem(claim, payment: "pay-2").status == 200)
        #expect(try await state(claim) == "redeemed")
        // Another ride's payment holds the marker coupon.
        #expect(try await redeem(markerClaim, order: "order-2", payment: "pay-3").status == 200)

        // Payment 1's failure, delivered again (a reclaimed stream entry); then the other ride's payment
        // failure as a marker: once the marker coupon is back, the late event has been handled (one
        // consumer, in stream order).
        let stream = EventEnvelope.streamKey(PaymentEvents.Failed.stream)
        for (payment, order, coupon) in [("pay-1", "order-1", claim), ("pay-3", "order-2", markerClaim)] {
            let failed = PaymentEvents.Failed(
                paymentID: payment, orderID: order, riderID: rider, couponID: coupon, reason: "declined",
                at: Date().timeIntervalSince1970)
            try await events.send(RedisClient.xaddCommand(stream, fields: try EventEnvelope(failed, source: "payment").fields))
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while try await state(markerClaim) != "available", ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        try #require(try await state(markerClaim) == "available", "the marker payment's failure gives its coupon back")
        #expect(try await state(claim) == "redeemed", "a late failure of payment 1 gave back the coupon payment 2 used")
        await events.shutdown()
    }
}

