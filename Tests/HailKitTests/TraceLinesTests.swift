import Contracts
import Foundation
import HailKit
import HailKitTesting
import Logging
import RedisKit
import Testing

@Suite("trace lines of sampled requests", .enabled(if: TestEnvironment.hasBackends, "needs the Redis that scripts/test.sh starts"))
struct TraceLinesTests {
    let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort))

    @Test("a line is kept under its trace id and its request id, read back in the order the services received the request")
    func keptAndOrdered() async throws {
        let trace = TestEnvironment.unique("trace"), request = TestEnvironment.unique("request")
        let gateway = TraceLines(redis: redis, service: "gateway", instance: "gateway-1")
        let coupon = TraceLines(redis: redis, service: "coupon", instance: "coupon-1")
        let logger = Logger(label: "test")
        // Written out of order: the callee answers first, as it does.
        coupon.record(
            TraceLine(at: 100.002, service: "coupon", instance: "coupon-1", traceID: trace, requestID: request, method: "POST",
                path: "/v1/campaigns/c/claim", status: 201, milliseconds: 1.5), logger: logger)
        gateway.record(
            TraceLine(at: 100.001, service: "gateway", instance: "gateway-1", traceID: trace, requestID: request, method: "POST",
                path: "/api/v1/coupons/campaigns/c/claim", status: 201, milliseconds: 2.5), logger: logger)
        var lines: [TraceLine] = []
        for _ in 0..<50 where lines.count < 2 {
            try await Task.sleep(for: .milliseconds(20))
            lines = try await TraceLines.lines(for: trace, redis: redis)
        }
        #expect(lines.map(\.service) == ["gateway", "coupon"])
        #expect(try await TraceLines.lines(for: request, redis: redis).map(\.service) == ["gateway", "coupon"])
        let ttl = try await redis.send("TTL", TraceLines.key(trace)).int ?? -1
        #expect((3500...3600).contains(ttl), "kept for an hour: \(ttl)")
    }

    @Test("at most perSecond sampled requests a second are admitted; the next second starts again")
    func budget() {
        let lines = TraceLines(redis: redis, service: "order", instance: "order-1", perSecond: 2)
        let second = Date(timeIntervalSince1970: 1_800_000_000.2)
        #expect(lines.admit(now: second))
        #expect(lines.admit(now: second))
        #expect(!lines.admit(now: second.addingTimeInterval(0.5)))
        #expect(lines.admit(now: second.addingTimeInterval(1)))
    }
}
