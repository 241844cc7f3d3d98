import AsyncHTTPClient
import Contracts
import Foundation
import HailKit
import HailKitTesting
import NIOCore
import NIOHTTP1
import Synchronization
import Testing

/// A running `hailstorm-coupon` process, restartable on the same port and data folder.
final class CouponProcess: Sendable {
    let service: ServiceProcess

    /// The public claims stream's name.
    let claimsStream: String

    /// `options` beside the test's own (a Redis Cluster's, the stock's buckets).
    init(redisPort: Int = TestEnvironment.redisPort, options: [String: String] = [:]) throws {
        let prefix = TestEnvironment.unique("coupon")
        claimsStream = "\(prefix).claims"
        service = try ServiceProcess(
            "coupon", redisPort: redisPort, discoveryPrefix: "/\(prefix)",
            options: [
                "coupon-redis-prefix": prefix, "coupon-claims-stream": claimsStream,
                "coupon-claims-reclaim-seconds": "1", "log-level": "warning",
            ].merging(options) { $1 })
    }

    var baseURL: String { service.baseURL }

    func start() async throws { try await service.start() }

    func kill() { service.kill() }

    func stop() { service.stop() }
}

/// Tokens for a crowd of riders and an admin, signed with the test run's login key.
struct Crowd {
    let admin: String
    let riders: [(id: String, token: String)]

    init(riders count: Int) async throws {
        let tokens = try await TestKeys.tokens()
        let now = Date()
        func sign(_ id: String, _ role: Role) async throws -> String {
            try await tokens.sign(AccessTokenClaims(
                userID: id, role: role, tokenID: UUID().uuidString, issuedAt: now, expiresAt: now + 3600))
        }
        admin = try await sign("admin-\(UUID().uuidString)", .admin)
        var riders: [(String, String)] = []
        for i in 0..<count {
            let id = "rider-\(i)-\(UUID().uuidString.prefix(8))"
            riders.append((id, try await sign(id, .rider)))
        }
        self.riders = riders
    }
}

struct Answer: Sendable {
    var status: Int
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:]
    }
    var body: Data
    /// The problem type's slug (`sold-out`), for a problem answer.
    var slug: String? {
        (json["type"] as? String).map { $0.replacingOccurrences(of: "urn:hailstorm:problem:", with: "") }
    }
}

func send(
    _ client: HTTPClient, _ method: HTTPMethod, _ url: String, token: String?, body: Encodable? = nil,
    idempotencyKey: String? = nil
) async throws -> Answer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    if let idempotencyKey { request.headers.add(name: "Idempotency-Key", value: idempotencyKey) }
    if let body {
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(body)))
    }
    let response = try await client.execute(request, timeout: .seconds(30))
    let bytes = try await response.body.collect(upTo: 1 << 20)
    return Answer(status: Int(response.status.code), body: Data(buffer: bytes))
}

func makeClient(connections: Int) -> HTTPClient {
    var configuration = HTTPClient.Configuration()
    configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}

func createCampaign(
    _ client: HTTPClient, _ service: CouponProcess, admin: String, stock: Int, perUserLimit: Int = 1, startsIn: Double = -1,
    lasts: Double = 3600
) async throws -> String {
    let now = Date().timeIntervalSince1970
    let answer = try await send(
        client, .POST, service.baseURL + "/v1/campaigns", token: admin,
        body: CouponAPI.NewCampaign(
            name: "Flash sale", city: "test", kind: .amount, amountOffCents: 500, stock: stock, perUserLimit: perUserLimit,
            startsAt: now + startsIn, endsAt: now + startsIn + lasts))
    try #require(answer.status == 201, "campaign not created: \(String(decoding: answer.body, as: UTF8.self))")
    return try #require(answer.json["id"] as? String)
}

/// The books after the claims stream has drained (waits until everything granted is stored).
func drainedAudit(_ client: HTTPClient, _ service: CouponProcess, admin: String, campaign: String) async throws -> [String: Any] {
    try await drainedAudit(client, baseURL: service.baseURL, admin: admin, campaign: campaign)
}

func drainedAudit(_ client: HTTPClient, baseURL: String, admin: String, campaign: String) async throws -> [String: Any] {
    let deadline = ContinuousClock.now + .seconds(60)
    while true {
        let audit = try await send(client, .GET, baseURL + "/v1/campaigns/\(campaign)/audit", token: admin)
        try #require(audit.status == 200)
        if audit.json["pendingOnStream"] as? Int == 0 || ContinuousClock.now > deadline { return audit.json }
        try await Task.sleep(for: .milliseconds(200))
    }
}

/// Answers received so far, shared by the storm's workers and the test that watches them.
final class Progress: Sendable {
    private let answered = Atomic<Int>(0)
    func add() { answered.add(1, ordering: .relaxed) }
    var count: Int { answered.load(ordering: .relaxed) }
}

/// One claim attempt of the storm: rider `rider`, attempt `attempt` (its Idempotency-Key).
struct Attempt: Sendable {
    var rider: Int
    var attempt: Int
}

/// Runs every attempt over `connections` concurrent workers. An attempt whose request fails (the service
/// is down) is repeated with the same Idempotency-Key until it gets an answer, as a client app would.
func storm(
    _ attempts: [Attempt], crowd: Crowd, campaign: String, service: CouponProcess, client: HTTPClient,
    connections: Int, progress: Progress
) async throws -> [(Attempt, Answer)] {
    try await withThrowingTaskGroup(of: [(Attempt, Answer)].self) { group in
        for worker in 0..<connections {
            group.addTask {
                var answers: [(Attempt, Answer)] = []
                for index in stride(from: worker, to: attempts.count, by: connections) {
                    let a = attempts[index]
                    let rider = crowd.riders[a.rider]
                    let deadline = ContinuousClock.now + .seconds(90)
                    while true {
                        do {
                            let answer = try await send(
                                client, .POST, service.baseURL + "/v1/campaigns/\(campaign)/claim", token: rider.token,
                                idempotencyKey: "\(rider.id)-\(a.attempt)")
                            // A 500 is a fault of the service, not an outage a client waits out.
                            if answer.status == 500 {
                                // With the service's log lines for that request: what the error was.
                                let request = answer.json["requestId"] as? String ?? "-"
                                let lines = service.service.output().split(separator: "\n").filter { $0.contains(request) }
                                Issue.record("answered 500: \(String(decoding: answer.body, as: UTF8.self))\n\(lines.joined(separator: "\n"))")
                            }
                            if answer.status >= 500 { throw TestProcessError("answered \(answer.status): \(String(decoding: answer.body, as: UTF8.self))") }
                            answers.append((a, answer))
                            break
                        } catch {
                            if ContinuousClock.now > deadline { throw error }
                            try await Task.sleep(for: .milliseconds(100))
                        }
                    }
                    progress.add()
                }
                return answers
            }
        }
        var all: [(Attempt, Answer)] = []
        for try await answers in group { all += answers }
        return all
    }
}

@Suite("Coupon flash sale", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .serialized)
struct FlashSaleTests {
    static let riders = 5000
    static let attemptsPerRider = 4
    static let stock = 1000
    static let connections = 200

    func attempts() -> [Attempt] {
        var all: [Attempt] = []
        for rider in 0..<Self.riders { for attempt in 0..<Self.attemptsPerRider { all.append(Attempt(rider: rider, attempt: attempt)) } }
        var rng = SystemRandomNumberGenerator()
        all.shuffle(using: &rng)
        return all
    }

    /// What every storm must end with, whatever happened on the way.
    func checkBooks(_ answers: [(Attempt, Answer)], crowd: Crowd, audit: [String: Any]) {
        let granted = answers.filter { $0.1.status == 201 }
        let claimIDs = Set(granted.compactMap { $0.1.json["claimID"] as? String })
        let winners = Set(granted.map(\.0.rider))
        #expect(answers.count == Self.riders * Self.attemptsPerRider, "every attempt got an answer")
        #expect(claimIDs.count == Self.stock, "exactly the stock is granted")
        #expect(winners.count == Self.stock, "no rider holds two coupons")
        for (_, answer) in answers where answer.status != 201 {
            #expect(answer.status == 409 && ["sold-out", "limit-reached"].contains(answer.slug ?? ""), "refusal: \(answer.status) \(answer.slug ?? "-")")
        }
        #expect(audit["granted"] as? Int == Self.stock)
        #expect(audit["remaining"] as? Int == 0)
        #expect(audit["persisted"] as? Int == Self.stock, "every granted claim is in SQLite")
        #expect(audit["distinctUsers"] as? Int == Self.stock)
        #expect((audit["overLimitUsers"] as? [String])?.isEmpty == true)
    }

    @Test("20,000 claims from 5,000 riders over 200 connections: exactly 1,000 granted, each stored once")
    func flashSale() async throws {
        let service = try CouponProcess()
        try await service.start()
        defer { service.stop() }
        let client = makeClient(connections: Self.connections)
        do {
            let crowd = try await Crowd(riders: Self.riders)
            let campaign = try await createCampaign(client, service, admin: crowd.admin, stock: Self.stock)
            let progress = Progress()
            let answers = try await storm(
                attempts(), crowd: crowd, campaign: campaign, service: service, client: client,
                connections: Self.connections, progress: progress)
            let audit = try await drainedAudit(client, service, admin: crowd.admin, campaign: campaign)
            checkBooks(answers, crowd: crowd, audit: audit)

            // A winner sees the coupon in the wallet; repeating its granted attempt answers the same claim.
            let (winning, grant) = try #require(answers.first { $0.1.status == 201 })
            let rider = crowd.riders[winning.rider]
            let wallet = try await send(client, .GET, service.baseURL + "/v1/wallet", token: rider.token)
            let coupons = try #require(wallet.json["coupons"] as? [[String: Any]])
            #expect(coupons.count == 1)
            #expect(coupons.first?["claimID"] as? String == grant.json["claimID"] as? String)
            let again = try await send(
                client, .POST, service.baseURL + "/v1/campaigns/\(campaign)/claim", token: rider.token,
                idempotencyKey: "\(rider.id)-\(winning.attempt)")
            #expect(again.status == 201 && again.json["claimID"] as? String == grant.json["claimID"] as? String)
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    @Test("claims before the start, after the end, by a driver or unsigned are refused with the reason")
    func refusals() async throws {
        let service = try CouponProcess()
        try await service.start()
        defer { service.stop() }
        let client = makeClient(connections: 4)
        do {
            let crowd = try await Crowd(riders: 1)
            let rider = crowd.riders[0].token
            let later = try await createCampaign(client, service, admin: crowd.admin, stock: 5, startsIn: 3600)
            let over = try await createCampaign(client, service, admin: crowd.admin, stock: 5, startsIn: -10, lasts: 5)
            let open = try await createCampaign(client, service, admin: crowd.admin, stock: 5)
            let notStarted = try await send(client, .POST, service.baseURL + "/v1/campaigns/\(later)/claim", token: rider)
            #expect(notStarted.status == 409 && notStarted.slug == "not-started")
            let ended = try await send(client, .POST, service.baseURL + "/v1/campaigns/\(over)/claim", token: rider)
            #expect(ended.status == 409 && ended.slug == "ended")
            let unknown = try await send(client, .POST, service.baseURL + "/v1/campaigns/nope/claim", token: rider)
            #expect(unknown.status == 404)
            let unsigned = try await send(client, .POST, service.baseURL + "/v1/campaigns/\(open)/claim", token: nil)
            #expect(unsigned.status == 401)
            let tokens = try await TestKeys.tokens()
            let driver = try await tokens.sign(AccessTokenClaims(
                userID: "driver-1", role: .driver, tokenID: "t", issuedAt: Date(), expiresAt: Date() + 60))
            let byDriver = try await send(client, .POST, service.baseURL + "/v1/campaigns/\(open)/claim", token: driver)
            #expect(byDriver.status == 403)
            let byRider = try await send(client, .POST, service.baseURL + "/v1/campaigns", token: rider,
                body: CouponAPI.NewCampaign(name: "x", city: "y", kind: .amount, amountOffCents: 1, stock: 1, startsAt: 1, endsAt: 2))
            #expect(byRider.status == 403, "only an admin creates campaigns")
            let bad = try await send(client, .POST, service.baseURL + "/v1/campaigns", token: crowd.admin,
                body: CouponAPI.NewCampaign(name: "x", city: "y", kind: .percent, percentOff: 150, stock: 1, startsAt: 1, endsAt: 2))
            #expect(bad.status == 400 && bad.json["field"] as? String == "percentOff")
            let granted = try await send(client, .POST, service.baseURL + "/v1/campaigns/\(open)/claim", token: rider)
            #expect(granted.status == 201)
            let second = try await send(client, .POST, service.baseURL + "/v1/campaigns/\(open)/claim", token: rider)
            #expect(second.status == 409 && second.slug == "limit-reached")
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    @Test("the same storm with the service SIGKILLed mid-sale and restarted: still 1,000, none lost, none doubled")
    func flashSaleSurvivesKill() async throws {
        let service = try CouponProcess()
        try await service.start()
        defer { service.stop() }
        let client = makeClient(connections: Self.connections)
        do {
            let crowd = try await Crowd(riders: Self.riders)
            let campaign = try await createCampaign(client, service, admin: crowd.admin, stock: Self.stock)
            let progress = Progress()
            let attempts = attempts()
            async let answers = storm(
                attempts, crowd: crowd, campaign: campaign, service: service, client: client,
                connections: Self.connections, progress: progress)
            // Kill it while coupons are still being granted (stock runs out within the first few thousand
            // attempts), then bring it back on the same port and data.
            while progress.count < Self.stock * 2 / 5 { try await Task.sleep(for: .milliseconds(2)) }
            service.kill()
            try await Task.sleep(for: .milliseconds(500))
            try await service.start()
            let atRestart = try await send(client, .GET, service.baseURL + "/v1/campaigns/\(campaign)/audit", token: crowd.admin)
            #expect((atRestart.json["remaining"] as? Int ?? 0) > 0, "the kill landed mid-sale")
            let all = try await answers
            let audit = try await drainedAudit(client, service, admin: crowd.admin, campaign: campaign)
            checkBooks(all, crowd: crowd, audit: audit)
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }
}
