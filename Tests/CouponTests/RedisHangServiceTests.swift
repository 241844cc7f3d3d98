import AsyncHTTPClient
import Foundation
import HailKitTesting
import Testing

/// A service whose Redis hangs keeps answering: `/readyz` says not ready within its own timeout instead
/// of holding the prober (and the load balancer behind it) for as long as Redis is frozen.
@Suite("A service whose Redis hangs", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"))
struct RedisHangServiceTests {
    @Test("/readyz answers 503 within its timeout while Redis hangs, and 200 again once it answers")
    func readinessWhileRedisHangs() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        let prefix = TestEnvironment.unique("coupon-hang")
        let coupon = try ServiceProcess(
            "coupon", redisPort: redis.port, discoveryPrefix: "/\(prefix)",
            options: ["coupon-redis-prefix": prefix, "redis-command-timeout-ms": "800", "log-level": "warning"])
        try await coupon.start()
        defer { coupon.kill() }

        redis.hang()
        let clock = ContinuousClock()
        let started = clock.now
        let response = try await HTTPClient.shared.execute(
            HTTPClientRequest(url: coupon.baseURL + "/readyz"), timeout: .seconds(10))
        let body = String(buffer: try await response.body.collect(upTo: 1 << 16))
        #expect(response.status == .serviceUnavailable, "\(body)")
        #expect(body.contains("redis"), "the failing dependency is named: \(body)")
        #expect(clock.now - started < .seconds(3), "/readyz took \(clock.now - started) with Redis hung")


        redis.resume()
        try await TestProcess.waitUntilReady(coupon.baseURL + "/readyz", timeout: .seconds(10))
    }
}
