import AsyncHTTPClient
import Contracts
import EventBus
import Foundation
import HailKit
import HailKitTesting
import RedisKit
import Testing

/// A campaign's stock split over buckets, each on a slot of its own: a rider's claim goes to their home
/// bucket and falls over to the others once it is empty. What riders would notice if that went wrong:
/// coupons left in one bucket while others' riders are told "sold out", a rider past the limit, a
/// retried claim granted twice, a grant lost when a Redis master dies.
@Suite(
    "A flash sale over stock buckets", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"),
    .serialized, .timeLimit(.minutes(4)))
struct SaleBucketsTests {
    /// Distinct claims on the public stream (what ad, analytics and the command centre follow), once
    /// `expected` are there or 20 s passed.
    func publishedClaims(_ redis: RedisClient, stream: String, expected: Int) async throws -> Set<String> {
        let deadline = ContinuousClock.now + .seconds(20)
        var claims = Set<String>()
        while ContinuousClock.now < deadline {
            let entries = try await redis.xrange(EventEnvelope.streamKey(stream), from: "-", to: "+", count: expected * 2 + 10)
            claims = Set(entries.compactMap { entry -> String? in
                guard let payload = entry.fields["payload"] else { return nil }
                return (try? JSONDecoder().decode(CouponEvents.Claimed.self, from: Data(payload)))?.claimID
            })
            if claims.count >= expected { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        return claims
    }

    @Test("four buckets, every claimant's home in the same one: all 100 coupons go (75 from the other buckets), nobody past the limit of 2, retries answer their first grant")
    func fallOver() async throws {
        let buckets = 4
        let service = try CouponProcess(options: ["coupon-stock-buckets": String(buckets)])
        try await service.start()
        defer { service.stop() }
        let client = makeClient(connections: 32)
        let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort, poolSize: 2))
        do {
            let crowd = try await Crowd(riders: 900)
            // The home bucket is the rider id's hash slot modulo the bucket count.
            let sameHome = crowd.riders.indices.filter { HashSlot.of(crowd.riders[$0].id) % buckets == 0 }
            try #require(sameHome.count >= 150, "\(sameHome.count) riders share bucket 0")
            let claimants = Array(sameHome.prefix(150))
            let campaign = try await createCampaign(client, service, admin: crowd.admin, stock: 100, perUserLimit: 2)
            let attempts = claimants.flatMap { [Attempt(rider: $0, attempt: 0), Attempt(rider: $0, attempt: 1)] }.shuffled()
            let answers = try await storm(
                attempts, crowd: crowd, campaign: campaign, service: service, client: client, connections: 32,
                progress: Progress())

            let granted = answers.filter { $0.1.status == 201 }
            #expect(Set(granted.compactMap { $0.1.json["claimID"] as? String }).count == 100, "every coupon of every bucket is granted")
            let perRider = Dictionary(grouping: granted, by: \.0.rider).mapValues(\.count)
            #expect(perRider.values.allSatisfy { $0 <= 2 })
            for (_, answer) in answers where answer.status != 201 {
                #expect(answer.status == 409 && answer.slug == "sold-out", "refusal: \(answer.status) \(answer.slug ?? "-")")
            }
            let audit = try await drainedAudit(client, service, admin: crowd.admin, campaign: campaign)
            #expect(audit["granted"] as? Int == 100 && audit["remaining"] as? Int == 0, "\(audit)")
            #expect(audit["persisted"] as? Int == 100, "every granted claim is in SQLite: \(audit)")
            #expect((audit["overLimitUsers"] as? [String])?.isEmpty == true)

            // Each grant, asked again with its key, answers the same claim and takes nothing more.
            for (attempt, answer) in granted {
                let rider = crowd.riders[attempt.rider]
                let again = try await send(
                    client, .POST, service.baseURL + "/v1/campaigns/\(campaign)/claim", token: rider.token,
                    idempotencyKey: "\(rider.id)-\(attempt.attempt)")
                #expect(again.status == 201 && again.json["claimID"] as? String == answer.json["claimID"] as? String)
            }
            // A rider of another home bucket, after the sale: sold out (that bucket gave its coupons away).
            let other = try #require(crowd.riders.indices.first { HashSlot.of(crowd.riders[$0].id) % buckets == 2 })
            let late = try await send(
                client, .POST, service.baseURL + "/v1/campaigns/\(campaign)/claim", token: crowd.riders[other].token)
            #expect(
                late.status == 409 && late.slug == "sold-out",
                "\(late.status) \(String(decoding: late.body, as: UTF8.self))\n\(service.service.output().suffix(3000))")
            let afterwards = try await drainedAudit(client, service, admin: crowd.admin, campaign: campaign)
            #expect(afterwards["granted"] as? Int == 100 && afterwards["persisted"] as? Int == 100, "\(afterwards)")

            // Followers see each claim once on the public stream.
            let published = try await publishedClaims(redis, stream: service.claimsStream, expected: 100)
            #expect(published == Set(granted.compactMap { $0.1.json["claimID"] as? String }))
        } catch {
            await redis.shutdown()
            try await client.shutdown()
            throw error
        }
        await redis.shutdown()
        try await client.shutdown()
    }

    @Test("a six-node Redis Cluster, the stock over three masters, claims waiting for a replica: 6,000 claims for 600 coupons with one master SIGKILLed mid-sale — exactly 600 granted, one per rider, every one stored and published")
    func failoverMidSale() async throws {
        let cluster = try RedisClusterProcess()
        defer { cluster.stopAll() }
        let service = try CouponProcess(
            redisPort: cluster.ports[0],
            options: [
                "redis-cluster": "true",
                "redis-cluster-nodes": cluster.ports.dropFirst().map { "127.0.0.1:\($0)" }.joined(separator: ","),
                "coupon-stock-buckets": "3", "coupon-redis-wait-replicas": "1", "coupon-redis-wait-ms": "200",
            ])
        try await service.start()
        defer { service.stop() }
        let stock = 600
        let connections = 48
        let client = makeClient(connections: connections)
        let redis = RedisClient(configuration: cluster.configuration(reconnectWindow: .seconds(10)))
        do {
            let crowd = try await Crowd(riders: 3000)
            let campaign = try await createCampaign(client, service, admin: crowd.admin, stock: stock)
            try cluster.waitUntilReplicated()
            // The three buckets' stocks sit on the three masters.
            let masters = try cluster.masterPorts()
            for port in masters {
                let keys = try cluster.cli(port, "KEYS", "*\(campaign):stock")
                #expect(keys.split(separator: "\n").count == 1, "master \(port) holds one bucket: \(keys)")
            }
            let attempts = (0..<3000).flatMap { [Attempt(rider: $0, attempt: 0), Attempt(rider: $0, attempt: 1)] }.shuffled()
            let progress = Progress()
            async let answers = storm(
                attempts, crowd: crowd, campaign: campaign, service: service, client: client, connections: connections,
                progress: progress)
            while progress.count < stock / 3 { try await Task.sleep(for: .milliseconds(2)) }
            let before = try await send(client, .GET, service.baseURL + "/v1/campaigns/\(campaign)/audit", token: crowd.admin)
            // The master of the middle third of the slots: bucket 1's.
            let victim = try #require(try cluster.master(ofSlot: HashSlot.count / 2))
            cluster.kill(victim)
            #expect((before.json["remaining"] as? Int ?? 0) > 0, "the kill lands mid-sale: \(before.json)")

            let all = try await answers
            let granted = all.filter { $0.1.status == 201 }
            let claimIDs = Set(granted.compactMap { $0.1.json["claimID"] as? String })
            #expect(all.count == attempts.count, "every attempt got an answer")
            #expect(claimIDs.count == stock, "exactly the stock is granted")
            #expect(Set(granted.map(\.0.rider)).count == stock, "no rider holds two coupons")
            for (_, answer) in all where answer.status != 201 {
                #expect(answer.status == 409 && ["sold-out", "limit-reached"].contains(answer.slug ?? ""), "refusal: \(answer.status) \(answer.slug ?? "-")")
            }
            let audit = try await drainedAudit(client, service, admin: crowd.admin, campaign: campaign)
            #expect(audit["granted"] as? Int == stock && audit["remaining"] as? Int == 0, "\(audit)")
            #expect(audit["persisted"] as? Int == stock, "every granted claim is in SQLite: \(audit)")
            #expect((audit["overLimitUsers"] as? [String])?.isEmpty == true)
            let published = try await publishedClaims(redis, stream: service.claimsStream, expected: stock)
            #expect(published == claimIDs, "the public stream holds each granted claim once")
        } catch {
            Issue.record("coupon's log:\n\(service.service.output().suffix(6000))")
            await redis.shutdown()
            try await client.shutdown()
            throw error
        }
        await redis.shutdown()
        try await client.shutdown()
    }
}
