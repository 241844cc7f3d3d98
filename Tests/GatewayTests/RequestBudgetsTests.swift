import Foundation
@testable import Gateway
import HailKit
import HailKitTesting
import RedisKit
import Testing

/// The gateway's rate limit counted per instance and shared through Redis in batches, and the deny-list
/// kept per instance: what a client gets past the limit, and what happens when the counts go stale.
@Suite("Gateway request budgets and revocations", .enabled(if: TestEnvironment.hasBackends, "needs the Redis that scripts/test.sh starts"))
struct RequestBudgetsTests {
    let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort))

    @Test("two instances share one budget: at most one sync's worth of requests past the limit, then refusals on both")
    func sharedBudget() async throws {
        let prefix = TestEnvironment.unique("budget")
        let a = RequestBudgets(limit: 10, window: .seconds(3600), keyPrefix: prefix)
        let b = RequestBudgets(limit: 10, window: .seconds(3600), keyPrefix: prefix)
        #expect(isUnknown(a.take("rider")), "before its first sync an instance knows nothing and asks Redis")
        try await a.sync(redis: redis)
        try await b.sync(redis: redis)

        for _ in 0..<6 { #expect(isAllowed(a.take("rider"))) }
        try await a.sync(redis: redis)
        // B hears of A's six with its own first sync for the rider.
        #expect(isAllowed(b.take("rider")))
        try await b.sync(redis: redis)
        var allowedOnB = 1
        while isAllowed(b.take("rider")) { allowedOnB += 1 }
        #expect(allowedOnB == 4, "B lets the rider reach exactly 10 once it knows of A's 6")
        if case .refused(let seconds) = b.take("rider") {
            #expect((1...3600).contains(seconds))
        } else {
            Issue.record("B should refuse beyond the limit")
        }
        try await b.sync(redis: redis)
        // A has not synced since: one request gets through on A's stale view, and no more after its sync.
        #expect(isAllowed(a.take("rider")))
        try await a.sync(redis: redis)
        #expect(!isAllowed(a.take("rider")))
        let total = try await redis.send("GET", a.key("rider", at: RequestBudgets.nowMilliseconds())).string
        #expect(total == "11", "10 allowed plus the one A let through before its sync")
        // Another client's budget is its own.
        #expect(isAllowed(a.take("driver")))
    }

    @Test("a client below `syncAfter` in a window costs Redis nothing; past it, its counts are carried each sync and bound it across instances")
    func syncAfter() async throws {
        let prefix = TestEnvironment.unique("after")
        let a = RequestBudgets(limit: 20, window: .seconds(3600), keyPrefix: prefix, syncAfter: 4)
        let b = RequestBudgets(limit: 20, window: .seconds(3600), keyPrefix: prefix, syncAfter: 4)
        try await a.sync(redis: redis)
        try await b.sync(redis: redis)
        let key = a.key("rider", at: RequestBudgets.nowMilliseconds())

        for _ in 0..<3 { #expect(isAllowed(a.take("rider"))) }
        try await a.sync(redis: redis)
        #expect(try await redis.send("EXISTS", key).int == 0, "three requests stay in the instance")

        #expect(isAllowed(a.take("rider")))
        try await a.sync(redis: redis)
        #expect(try await redis.send("GET", key).string == "4", "the fourth carries all four")
        let ttl = try await redis.send("PTTL", key).int ?? -1
        #expect(ttl > 3_600_000 && ttl <= 7_200_000, "the window's counter expires after two windows, set with its first write")

        for _ in 0..<4 { #expect(isAllowed(b.take("rider"))) }
        try await b.sync(redis: redis)
        #expect(try await redis.send("GET", key).string == "8")
        // B knows of A's four: it lets the rider reach exactly 20.
        var allowedOnB = 0
        while isAllowed(b.take("rider")) { allowedOnB += 1 }
        #expect(allowedOnB == 12)
        try await b.sync(redis: redis)
        // Past its syncAfter, A's next request is carried with the next sync, which brings B's total.
        #expect(isAllowed(a.take("rider")))
        try await a.sync(redis: redis)
        #expect(!isAllowed(a.take("rider")))
        #expect(try await redis.send("GET", key).string == "21", "20 plus the one A let through before its sync")
    }

    @Test("counts that cannot be synced go stale: requests are then counted in Redis, and nothing counted is lost")
    func staleCounts() async throws {
        let prefix = TestEnvironment.unique("stale")
        let budgets = RequestBudgets(limit: 100, window: .seconds(3600), keyPrefix: prefix, staleAfter: .milliseconds(200))
        try await budgets.sync(redis: redis)
        for _ in 0..<3 { #expect(isAllowed(budgets.take("rider"))) }
        let dead = RedisClient(configuration: .init(port: try TestEnvironment.freePort(), poolSize: 1, reconnectWindow: .milliseconds(50)))
        await #expect(throws: (any Error).self) { try await budgets.sync(redis: dead) }
        try await Task.sleep(for: .milliseconds(250))
        #expect(isUnknown(budgets.take("rider")), "stale counts must not decide")
        // Back: the three counted before the failure reach Redis with the next sync.
        try await budgets.sync(redis: redis)
        let total = try await redis.send("GET", budgets.key("rider", at: RequestBudgets.nowMilliseconds())).string
        #expect(total == "3")
    }

    @Test("the deny-list already in Redis is read on subscription; revocations after it are known at once")
    func revocations() async throws {
        let revocations = Revocations()
        let token = TestEnvironment.unique("jti")
        let session = TestEnvironment.unique("sid")
        let identity = Identity(userID: "u", role: .rider, tokenID: token, sessionID: session)
        #expect(revocations.isRevoked(identity) == nil, "nothing is known before the deny-list was read")
        try await redis.set(AccessTokens.sessionDenyListKey(sessionID: session), to: "1", expiresIn: .seconds(60))
        try await revocations.reload(redis: redis)
        #expect(revocations.isRevoked(identity) == true)
        let other = Identity(userID: "v", role: .rider, tokenID: TestEnvironment.unique("jti"), sessionID: nil)
        #expect(revocations.isRevoked(other) == false)
        revocations.revoke(tokenID: other.tokenID, sessionID: nil)
        #expect(revocations.isRevoked(other) == true)
        revocations.lost()
        #expect(revocations.isRevoked(other) == nil, "a lost subscription may have missed revocations")
    }

    private func isAllowed(_ decision: RequestBudgets.Decision) -> Bool {
        if case .allowed = decision { return true }
        return false
    }

    private func isUnknown(_ decision: RequestBudgets.Decision) -> Bool {
        if case .unknown = decision { return true }
        return false
    }
}
