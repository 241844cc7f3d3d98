import AsyncHTTPClient
import Contracts
import Foundation
import HailKitTesting
import SQLiteKit
import Testing

/// Campaigns an attacker (or a careless admin) could store: they are refused at the door, and one that
/// got into the file anyway does not stop the service.
/// Runs `body` with an HTTP client that is shut down after it, whatever happens.
func withClient(_ body: (HTTPClient) async throws -> Void) async throws {
    let client = makeClient(connections: 4)
    do {
        try await body(client)
    } catch {
        try? await client.shutdown()
        throw error
    }
    try await client.shutdown()
}

@Suite("campaigns that once stopped coupon", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .serialized, .timeLimit(.minutes(3)))
struct HostileCampaignTests {
    @Test("a sale window past 2100 is a 400 naming the field; the same Idempotency-Key with other settings is a 422; an empty or 201-character key is a 400")
    func refusedAtTheDoor() async throws {
        let service = try CouponProcess()
        try await service.start()
        defer { service.stop() }
        try await withClient { client in
        let crowd = try await Crowd(riders: 1)
        let now = Date().timeIntervalSince1970
        for (field, starts, ends) in [("endsAt", now, 1e18), ("startsAt", 1e300, 2e300), ("endsAt", now, -1)] {
            let answer = try await send(
                client, .POST, service.baseURL + "/v1/campaigns", token: crowd.admin,
                body: CouponAPI.NewCampaign(name: "x", city: "y", kind: .amount, amountOffCents: 1, stock: 1, startsAt: starts, endsAt: ends))
            #expect(answer.status == 400, "\(field): \(answer.status)")
            #expect(answer.json["field"] as? String == field)
        }
        let key = UUID().uuidString
        let first = CouponAPI.NewCampaign(name: "Sale", city: "y", kind: .amount, amountOffCents: 100, stock: 5, startsAt: now, endsAt: now + 60)
        var second = first
        second.stock = 5000
        let created = try await send(client, .POST, service.baseURL + "/v1/campaigns", token: crowd.admin, body: first, idempotencyKey: key)
        #expect(created.status == 201)
        let repeated = try await send(client, .POST, service.baseURL + "/v1/campaigns", token: crowd.admin, body: first, idempotencyKey: key)
        #expect(repeated.status == 201 && repeated.json["id"] as? String == created.json["id"] as? String)
        let changed = try await send(client, .POST, service.baseURL + "/v1/campaigns", token: crowd.admin, body: second, idempotencyKey: key)
        #expect(changed.status == 422)
        #expect(changed.slug == "idempotency-key-reused")
        // A key that is empty or too long to keep is refused, and makes no campaign.
        for bad in ["", String(repeating: "k", count: 201)] {
            let refused = try await send(client, .POST, service.baseURL + "/v1/campaigns", token: crowd.admin, body: first, idempotencyKey: bad)
            #expect(refused.status == 400 && refused.json["field"] as? String == "Idempotency-Key", "key of \(bad.count): \(refused.status)")
        }
        // An id naming a shard this unsplit service does not have names no campaign.
        let rider = try #require(crowd.riders.first)
        let unknown = try await send(client, .POST, service.baseURL + "/v1/campaigns/s1-nothing/claim", token: rider.token)
        #expect(unknown.status == 404, "\(unknown.status)")
        #expect(service.service.process?.isRunning == true)
        }
    }

    @Test("a stored campaign whose window cannot be converted is skipped at start; the other sales open and the process stays up")
    func unloadableRowSkipped() async throws {
        let service = try CouponProcess()
        try await service.start()
        try await withClient { client in
        let crowd = try await Crowd(riders: 1)
        let good = try await createCampaign(client, service, admin: crowd.admin, stock: 10)
        service.stop()
        // The row the old code trapped on at every start: a current campaign ending in the year 3e10.
        let store = try await SQLiteStore.open(
            configuration: SQLiteConfiguration(path: service.service.dataDirectory + "/coupon.sqlite"), migrations: SQLiteMigrations())
        let now = Date().timeIntervalSince1970
        try await store.write { db in
            try db.execute(
                sql: """
                    INSERT INTO campaigns (id, name, city, kind, amount_off_cents, percent_off, minimum_fare_cents,
                        stock, per_user_limit, starts_at, ends_at, created_at, idempotency_key)
                    VALUES ('poison', 'poison', 'y', 'amount', 1, NULL, 0, 1, 1, ?, 1e18, ?, NULL)
                    """,
                arguments: [now - 10, now])
        }
        try await store.close()

        try await service.start()
        defer { service.stop() }
        let pid = try #require(service.service.process?.pid)
        let claim = try await send(client, .POST, service.baseURL + "/v1/campaigns/\(good)/claim", token: crowd.riders[0].token)
        #expect(claim.status == 201, "\(String(decoding: claim.body, as: UTF8.self))")
        // The old crash came ~4 s after each start; the same process still answers well after that.
        try await Task.sleep(for: .seconds(5))
        let health = try await send(client, .GET, service.baseURL + "/readyz", token: nil)
        #expect(health.status == 200)
        #expect(service.service.process?.pid == pid && service.service.process?.isRunning == true)
        #expect(service.service.output().contains("campaign not opened"))
        }
    }
}
