import HailKit
import HailKitTesting
import Hummingbird
import Testing

@Suite("A service whose Redis cannot be reached", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(1)))
struct RedisUnreachableTests {
    @Test("a request that needs Redis is a 503 problem with Retry-After, not a 500; the service stays alive")
    func unreachableRedisIsUnavailable() async throws {
        // A loopback port nobody listens on: every connection attempt is refused, nothing is sent.
        let closedPort = try #require(LoopbackPorts.free())
        let kit = try ServiceKit(
            name: "no-redis", reader: try .testing(["discovery.prefix": "/" + TestEnvironment.unique("nr") + "/"], redisPort: closedPort),
            defaultPort: 0)
        let router = kit.makeRouter()
        router.post("/counter") { _, _ -> Response in
            try await kit.redis.send("INCR", "counter")
            return Response(status: .ok)
        }
        try await withRunningService(kit.makeApplication(router: router)) { baseURL in
            let answer = try await testRequest(.POST, baseURL + "/counter")
            #expect(answer.status == 503)
            #expect(answer.header("Content-Type") == "application/problem+json")
            #expect(answer.json["type"] as? String == "urn:hailstorm:problem:unavailable")
            #expect(answer.header("Retry-After") == "1")
            let alive = try await testRequest(.GET, baseURL + "/healthz")
            #expect(alive.status == 200)
        }
    }
}
