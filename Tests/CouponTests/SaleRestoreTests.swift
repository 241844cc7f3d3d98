import AsyncHTTPClient
import Contracts
import Foundation
import HailKit
import HailKitTesting
import RedisKit
import Testing

/// Redis loses its data in the middle of a sale (restarted without persistence, flushed by mistake).
/// What riders would notice if the sale simply reopened: a second coupon past their limit, a retried
/// claim granted again, more coupons than the stock. The sale is rebuilt from the claims coupon stored.
@Suite("A flash sale after Redis lost its data", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"))
struct SaleRestoreTests {
    @Test("stock, each rider's limit and idempotent answers come back from SQLite; nothing is granted twice")
    func restoreAfterDataLoss() async throws {
        let redis = try RedisServerProcess()
        let admin = RedisClient(configuration: .init(port: redis.port, poolSize: 1))
        let coupon = try ServiceProcess(
            "coupon", redisPort: redis.port, discoveryPrefix: "/\(TestEnvironment.unique("coupon-restore"))",
            options: ["coupon-claims-reclaim-seconds": "1", "log-level": "warning"])
        defer {
            coupon.kill()
            redis.kill()
        }
        try await coupon.start()
        let client = HTTPClient.shared
        let crowd = try await Crowd(riders: 6)

        let now = Date().timeIntervalSince1970
        let created = try await send(
            client, .POST, coupon.baseURL + "/v1/campaigns", token: crowd.admin,
            body: CouponAPI.NewCampaign(
                name: "Restore", city: "test", kind: .amount, amountOffCents: 300, stock: 4, perUserLimit: 1,
                startsAt: now - 1, endsAt: now + 3600))
        let campaign = try #require(created.json["id"] as? String)
        func claim(_ rider: Int, key: String? = nil) async throws -> Answer {
            try await send(
                client, .POST, coupon.baseURL + "/v1/campaigns/\(campaign)/claim", token: crowd.riders[rider].token,
                idempotencyKey: key)
        }

        let first = try await claim(0, key: "tap-1")
        try #require(first.status == 201)
        let firstID = try #require(first.json["claimID"] as? String)
        #expect(try await claim(1).status == 201)
        // Both claims reach SQLite (the audit counts what is stored).
        let audit = try await drainedAudit(client, baseURL: coupon.baseURL, admin: crowd.admin, campaign: campaign)
        #expect(audit["persisted"] as? Int == 2, "\(audit)")

        try await admin.send("FLUSHALL")

        let again = try await claim(0)
        #expect(again.status == 409 && again.slug == "limit-reached", "rider 0 past their limit: \(again.status) \(again.slug ?? "")")
        let retried = try await claim(0, key: "tap-1")
        #expect(retried.status == 201 && retried.json["claimID"] as? String == firstID, "the retried claim answers the first grant")
        // Two coupons left of four.
        var statuses: [Int] = []
        for rider in 2..<6 { statuses.append(try await claim(rider).status) }
        #expect(statuses.filter { $0 == 201 }.count == 2, "\(statuses)")
        #expect(statuses.filter { $0 == 409 }.count == 2, "\(statuses)")
        let books = try await drainedAudit(client, baseURL: coupon.baseURL, admin: crowd.admin, campaign: campaign)
        #expect(books["persisted"] as? Int == 4, "\(books)")
        await admin.shutdown()
    }

    @Test("an operator pauses a sale: claims are refused as paused, a retried grant still answers, the pause outlives Redis losing its data; resumed, claims are granted")
    func pausedSale() async throws {
        let redis = try RedisServerProcess()
        let admin = RedisClient(configuration: .init(port: redis.port, poolSize: 1))
        let coupon = try ServiceProcess(
            "coupon", redisPort: redis.port, discoveryPrefix: "/\(TestEnvironment.unique("coupon-pause"))",
            options: ["coupon-claims-reclaim-seconds": "1", "log-level": "warning"])
        defer {
            coupon.kill()
            redis.kill()
        }
        try await coupon.start()
        let client = HTTPClient.shared
        let crowd = try await Crowd(riders: 3)
        let now = Date().timeIntervalSince1970
        let created = try await send(
            client, .POST, coupon.baseURL + "/v1/campaigns", token: crowd.admin,
            body: CouponAPI.NewCampaign(
                name: "Pause", city: "test", kind: .amount, amountOffCents: 300, stock: 10, perUserLimit: 1,
                startsAt: now - 1, endsAt: now + 3600))
        let campaign = try #require(created.json["id"] as? String)
        #expect(created.json["paused"] as? Bool == false)
        func claim(_ rider: Int, key: String? = nil) async throws -> Answer {
            try await send(
                client, .POST, coupon.baseURL + "/v1/campaigns/\(campaign)/claim", token: crowd.riders[rider].token, idempotencyKey: key)
        }
        func set(_ action: String, token: String? = nil) async throws -> Answer {
            try await send(client, .POST, coupon.baseURL + "/v1/campaigns/\(campaign)/\(action)", token: token ?? crowd.admin)
        }
        let first = try await claim(0, key: "tap-1")
        try #require(first.status == 201)

        let paused = try await set("pause")
        #expect(paused.status == 200 && paused.json["paused"] as? Bool == true, "\(String(decoding: paused.body, as: UTF8.self))")
        #expect(paused.json["remaining"] as? Int == 9)
        #expect(try await set("pause").json["paused"] as? Bool == true, "pausing again changes nothing")
        let refused = try await claim(1)
        #expect(refused.status == 409 && refused.slug == "campaign-paused", "\(refused.status) \(refused.slug ?? "")")
        let retried = try await claim(0, key: "tap-1")
        #expect(retried.status == 201 && retried.json["claimID"] as? String == first.json["claimID"] as? String,
            "a retry of a claim granted before the pause answers its grant")
        #expect(try await set("pause", token: crowd.riders[1].token).status == 403)
        #expect(try await send(client, .POST, coupon.baseURL + "/v1/campaigns/no-such/pause", token: crowd.admin).status == 404)

        // Redis loses the sale: it comes back from SQLite still paused.
        _ = try await drainedAudit(client, baseURL: coupon.baseURL, admin: crowd.admin, campaign: campaign)
        try await admin.send("FLUSHALL")
        var afterLoss = try await claim(1)
        for _ in 0..<20 where afterLoss.status == 503 {
            try await Task.sleep(for: .milliseconds(200))
            afterLoss = try await claim(1)
        }
        #expect(afterLoss.status == 409 && afterLoss.slug == "campaign-paused", "\(afterLoss.status) \(afterLoss.slug ?? "")")
        let listed = try await send(client, .GET, coupon.baseURL + "/v1/campaigns/\(campaign)", token: crowd.riders[2].token)
        #expect(listed.json["paused"] as? Bool == true)

        let resumed = try await set("resume")
        #expect(resumed.json["paused"] as? Bool == false)
        #expect(try await claim(1).status == 201)
        #expect(try await claim(2).status == 201)
        let books = try await drainedAudit(client, baseURL: coupon.baseURL, admin: crowd.admin, campaign: campaign)
        #expect(books["persisted"] as? Int == 3 && books["remaining"] as? Int == 7, "\(books)")
        await admin.shutdown()
    }
}
