import AsyncHTTPClient
import Configuration
import Contracts
import Discovery
import Foundation
import HailKit
import HailKitTesting
import Hummingbird
import Synchronization
import Testing

/// Counters the callee keeps, so tests can see what reached it.
final class CalleeState: Sendable {
    let calls = Mutex<[String: Int]>([:])
    let slowProgress = Atomic<Int>(0)
    let slowFinished = Atomic<Bool>(false)
    let healthy = Atomic<Bool>(false)
    let lastHeaders = Mutex<[String: String]>([:])

    func count(_ route: String) -> Int {
        calls.withLock { $0[route] ?? 0 }
    }

    func hit(_ route: String) -> Int {
        calls.withLock { calls in
            calls[route, default: 0] += 1
            return calls[route]!
        }
    }
}

/// A real service built by the kit, registered in etcd, whose routes misbehave on purpose.
func makeCallee(name: String, prefix: String, state: CalleeState, settings: [String: String] = [:]) throws -> HailApplication {
    let kit = try ServiceKit(
        name: name, reader: try .testing(["discovery.prefix": prefix].merging(settings) { $1 }), defaultPort: 0)
    let router = kit.makeRouter()
    router.get("/flaky") { _, _ -> Response in
        // Fails twice, then answers.
        let n = state.hit("flaky")
        return Response(status: n <= 2 ? .serviceUnavailable : .ok)
    }
    router.post("/flaky") { _, _ -> Response in
        let n = state.hit("flaky-post")
        return Response(status: n <= 2 ? .serviceUnavailable : .ok)
    }
    router.get("/sometimes") { _, _ -> Response in
        _ = state.hit("sometimes")
        return Response(status: state.healthy.load(ordering: .relaxed) ? .ok : .serviceUnavailable)
    }
    router.get("/slow") { _, _ -> Response in
        _ = state.hit("slow")
        for _ in 0..<40 {
            try await Task.sleep(for: .milliseconds(50))
            state.slowProgress.add(1, ordering: .relaxed)
        }
        state.slowFinished.store(true, ordering: .relaxed)
        return Response(status: .ok)
    }
    router.get("/echo") { request, _ -> Response in
        _ = state.hit("echo")
        state.lastHeaders.withLock { headers in
            for field in request.headers { headers[field.name.canonicalName] = field.value }
        }
        return Response(status: .ok)
    }
    return kit.makeApplication(router: router)
}

@Suite("ServiceClient: discovery, retries, breaker, deadlines", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(2)))
struct ServiceClientTests {
    func client(prefix: String, configuration: ServiceClientConfiguration) -> ServiceClient {
        ServiceClient(
            discovery: EtcdDiscovery(endpoint: TestEnvironment.etcdEndpoint, prefix: prefix, ttl: .seconds(2)),
            configuration: configuration)
    }

    func waitForRegistration(_ client: ServiceClient, _ service: String) async throws {
        for _ in 0..<100 {
            if try await !client.instances(of: service).isEmpty { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("\(service) never registered")
    }

    @Test("a GET that gets 503 is retried; a POST without Idempotency-Key is not; with one it is")
    func retries() async throws {
        let prefix = "/" + TestEnvironment.unique("sc") + "/"
        let state = CalleeState()
        let callee = try makeCallee(name: "callee", prefix: prefix, state: state)
        try await withRunningService(callee) { _ in
            let client = client(prefix: prefix, configuration: .init(maxAttempts: 3, backoffBase: .milliseconds(5), discoveryCacheTTL: .zero))
            try await waitForRegistration(client, "callee")

            let get = try await client.send(service: "callee", method: .get, path: "/flaky", context: .none)
            #expect(get.status == .ok)
            #expect(get.attempts == 3)
            #expect(state.count("flaky") == 3)

            let post = try await client.send(service: "callee", method: .post, path: "/flaky", context: .none)
            #expect(post.status == .serviceUnavailable)
            #expect(post.attempts == 1)
            #expect(state.count("flaky-post") == 1)

            let keyed = try await client.send(
                service: "callee", method: .post, path: "/flaky", context: CallContext(idempotencyKey: "pay-42"))
            #expect(keyed.status == .ok)
            #expect(state.count("flaky-post") == 3)
        }
    }

    @Test("the breaker opens after repeated failures, half-opens after the cool-down, and closes on success")
    func breaker() async throws {
        let prefix = "/" + TestEnvironment.unique("sc") + "/"
        let state = CalleeState()
        let callee = try makeCallee(name: "callee", prefix: prefix, state: state)
        try await withRunningService(callee) { _ in
            let client = client(
                prefix: prefix,
                configuration: .init(maxAttempts: 1, breakerThreshold: 3, breakerCooldown: .milliseconds(400)))
            try await waitForRegistration(client, "callee")
            let instance = try #require(try await client.instances(of: "callee").first)

            for _ in 0..<3 {
                let answer = try await client.send(service: "callee", method: .get, path: "/sometimes", context: .none)
                #expect(answer.status == .serviceUnavailable)
            }
            #expect(client.breakers.state(of: instance.id) == .open)
            // Open: refused here, without reaching the callee.
            await #expect(throws: Problem.self) {
                try await client.send(service: "callee", method: .get, path: "/sometimes", context: .none)
            }
            #expect(state.count("sometimes") == 3)

            try await Task.sleep(for: .milliseconds(450))
            #expect(client.breakers.state(of: instance.id) == .halfOpen)
            // The trial call fails: open again.
            _ = try await client.send(service: "callee", method: .get, path: "/sometimes", context: .none)
            #expect(state.count("sometimes") == 4)
            #expect(client.breakers.state(of: instance.id) == .open)

            state.healthy.store(true, ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(450))
            let recovered = try await client.send(service: "callee", method: .get, path: "/sometimes", context: .none)
            #expect(recovered.status == .ok)
            #expect(client.breakers.state(of: instance.id) == .closed)
        }
    }

    @Test("a call past its deadline is a 504 problem, and the callee stops working on it")
    func deadline() async throws {
        let prefix = "/" + TestEnvironment.unique("sc") + "/"
        let state = CalleeState()
        let callee = try makeCallee(name: "callee", prefix: prefix, state: state)
        try await withRunningService(callee) { _ in
            let client = client(prefix: prefix, configuration: .init(timeout: .milliseconds(300)))
            try await waitForRegistration(client, "callee")
            do {
                _ = try await client.send(service: "callee", method: .get, path: "/slow", context: .none)
                Issue.record("the slow call should have missed its deadline")
            } catch let problem as Problem {
                #expect(problem.status == .gatewayTimeout)
                #expect(problem.slug == "deadline-exceeded")
            }
            // The callee got the deadline in a header and cancelled the handler when it passed.
            try await Task.sleep(for: .milliseconds(300))
            let progress = state.slowProgress.load(ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(700))
            #expect(state.slowProgress.load(ordering: .relaxed) == progress, "the handler kept working")
            #expect(progress < 40)
            #expect(state.slowFinished.load(ordering: .relaxed) == false)
            #expect(state.count("slow") == 1, "a deadline miss is not retried")
        }
    }

    @Test("the request id and the W3C trace travel with the call")
    func propagation() async throws {
        let prefix = "/" + TestEnvironment.unique("sc") + "/"
        let state = CalleeState()
        let callee = try makeCallee(name: "callee", prefix: prefix, state: state)
        try await withRunningService(callee) { _ in
            let client = client(prefix: prefix, configuration: .init())
            try await waitForRegistration(client, "callee")
            let caller = HailRequestContextFixture.callContext()
            _ = try await client.send(service: "callee", method: .get, path: "/echo", context: caller)
            let seen = state.lastHeaders.withLock { $0 }
            #expect(seen["x-request-id"] == caller.requestID)
            let traceparent = try #require(seen["traceparent"])
            #expect(traceparent.contains(caller.trace!.traceID.description))
            let budget = try #require(seen["x-hailstorm-deadline-ms"].flatMap(Int.init))
            #expect(budget > 0 && budget <= 5000)
        }
    }

    @Test("discovery is followed: calls do not list instances again, and an instance counts from when it registers until it deregisters")
    func followed() async throws {
        let prefix = "/" + TestEnvironment.unique("sc") + "/"
        let first = CalleeState()
        let second = CalleeState()
        let discovery = ListingCounter(EtcdDiscovery(endpoint: TestEnvironment.etcdEndpoint, prefix: prefix, ttl: .seconds(2)))
        // Listed lists would be listed again ten times a second.
        let client = ServiceClient(discovery: discovery, configuration: .init(discoveryCacheTTL: .milliseconds(100)))
        try await withRunningService(try makeCallee(name: "callee", prefix: prefix, state: first)) { _ in
            try await waitForRegistration(client, "callee")
            for _ in 0..<30 {
                _ = try await client.send(service: "callee", method: .get, path: "/echo", context: .none)
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(first.count("echo") == 30)
            #expect(discovery.listings <= 2, "instances listed \(discovery.listings) times in 1.5 s of calls")

            try await withRunningService(try makeCallee(name: "callee", prefix: prefix, state: second)) { _ in
                // Its registration reaches the client through etcd's watch: calls go on until one lands
                // there (on a busy machine the watch's event can take longer than a few quick calls).
                var reached = false
                let deadline = ContinuousClock.now + .seconds(10)
                while !reached, ContinuousClock.now < deadline {
                    _ = try await client.send(service: "callee", method: .get, path: "/echo", context: .none)
                    reached = second.count("echo") > 0
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(reached, "the second instance got no call in 10 s after it registered")
            }
            // It deregistered as it stopped: the next calls all go to the first, none fails.
            let before = first.count("echo")
            for _ in 0..<20 {
                let answer = try await client.send(service: "callee", method: .get, path: "/echo", context: .none)
                #expect(answer.status == .ok && answer.attempts == 1)
            }
            #expect(first.count("echo") == before + 20)
            #expect(try await client.instances(of: "callee").count == 1)
            #expect(discovery.listings <= 2, "instances listed \(discovery.listings) times")
        }
    }

    @Test("a split service: a call for a shard goes to the instance owning it, an id to its shard's, a shard with no instance is a 503 naming it")
    func shards() async throws {
        let prefix = "/" + TestEnvironment.unique("sc") + "/"
        let owners = [CalleeState(), CalleeState()]
        var configuration = ServiceClientConfiguration()
        configuration.shards = ShardMap(["callee": 3])
        let client = client(prefix: prefix, configuration: configuration)
        @Sendable func callee(_ shard: Int) throws -> HailApplication {
            try makeCallee(name: "callee", prefix: prefix, state: owners[shard], settings: ["shards": "callee=3", "shard": String(shard)])
        }
        try await withRunningService(try callee(0)) { _ in
            try await withRunningService(try callee(1)) { _ in
                for _ in 0..<100 where try await client.instances(of: "callee").count < 2 { try await Task.sleep(for: .milliseconds(50)) }
                #expect(Set(try await client.instances(of: "callee").compactMap(\.shard)) == [0, 1], "each instance announces its shard")
                for _ in 0..<10 {
                    _ = try await client.send(service: "callee", method: .get, path: "/echo", shard: 1, context: .none)
                }
                #expect(owners[1].count("echo") == 10 && owners[0].count("echo") == 0, "shard 1's calls reached shard 0")
                let id = Shards.id("abc", shard: 0, of: 3)
                _ = try await client.send(
                    service: "callee", method: .get, path: "/echo", shard: try client.shard(of: "callee", id: id), context: .none)
                #expect(owners[0].count("echo") == 1)
                do {
                    _ = try await client.send(service: "callee", method: .get, path: "/echo", shard: 2, context: .none)
                    Issue.record("shard 2 has no instance, and a call for it was answered")
                } catch let problem as Problem {
                    #expect(problem.status == .serviceUnavailable && problem.detail?.contains("Shard 2") == true, "\(problem)")
                }
                #expect(owners[0].count("echo") == 1 && owners[1].count("echo") == 10, "another shard answered for shard 2")
                #expect(throws: Problem.self) { try client.shard(of: "callee", id: "s7-abc") }
                #expect(try client.shard(of: "other", id: "s2-abc") == nil, "a service not split has no shards to route to")
                // An instance told a shard its service does not have refuses to start.
                #expect(throws: ConfigurationError.self) {
                    try makeCallee(name: "callee", prefix: prefix, state: CalleeState(), settings: ["shards": "callee=3", "shard": "3"])
                }
            }
        }
    }

    @Test("no registered instance is a 503 problem")
    func noInstance() async throws {
        let prefix = "/" + TestEnvironment.unique("sc") + "/"
        let client = client(prefix: prefix, configuration: .init())
        do {
            _ = try await client.send(service: "nobody", method: .get, path: "/", context: .none)
            Issue.record("expected a problem")
        } catch let problem as Problem {
            #expect(problem.status == .serviceUnavailable)
        }
    }
}

import W3CTraceContext

/// Etcd's discovery, counting how often a service's instances are listed (`instances(of:)`).
final class ListingCounter: ServiceDiscovery {
    let etcd: EtcdDiscovery
    private let count = Atomic<Int>(0)
    var listings: Int { count.load(ordering: .relaxed) }

    init(_ etcd: EtcdDiscovery) { self.etcd = etcd }

    func instances(of service: String) async throws -> [ServiceInstance] {
        count.add(1, ordering: .relaxed)
        return try await etcd.instances(of: service)
    }
    func register(_ instance: ServiceInstance) async throws -> any ServiceRegistration { try await etcd.register(instance) }
    func watch(service: String?) -> AsyncThrowingStream<DiscoveryChange, any Error> { etcd.watch(service: service) }
    func ping() async throws { try await etcd.ping() }
    func follow() -> AsyncThrowingStream<[ServiceInstance], any Error>? { etcd.follow() }
}

enum HailRequestContextFixture {
    static func callContext() -> CallContext {
        CallContext(
            requestID: "req-\(UUID().uuidString.prefix(8))",
            trace: TraceContext(traceID: .random(), spanID: .random(), flags: .sampled, state: .init()))
    }
}

@Suite("Endpoint paths and random ids")
struct EndpointPathTests {
    @Test("a path parameter becomes one percent-encoded segment; a placeholder without a value stays")
    func pathParameters() {
        let endpoint = Endpoint<NoContent, NoContent>(service: "coupon", .post, "/v1/campaigns/{id}/claims/{claim}")
        #expect(endpoint.path(["id": "spring-sale_2026.1~x", "claim": "a b/c?d#é"]) == "/v1/campaigns/spring-sale_2026.1~x/claims/a%20b%2Fc%3Fd%23%C3%A9")
        #expect(endpoint.path(["id": "42"]) == "/v1/campaigns/42/claims/{claim}")
        #expect(endpoint.path() == "/v1/campaigns/{id}/claims/{claim}")
    }

    @Test("random ids are version 4 UUIDs in lowercase, and do not repeat")
    func randomIDs() {
        let ids = (0..<1000).map { _ in RandomID.uuid() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(50) {
            let parsed = UUID(uuidString: id)
            #expect(parsed != nil, "\(id) is not a UUID")
            #expect(id == id.lowercased() && id.count == 36)
            let bytes = parsed.map { withUnsafeBytes(of: $0.uuid) { Array($0) } } ?? []
            #expect(bytes.count == 16 && bytes[6] >> 4 == 4 && bytes[8] >> 6 == 2, "\(id) is not version 4, variant 10")
        }
        let hex = RandomID.hex(20)
        #expect(hex.count == 20 && hex.allSatisfy { $0.isHexDigit && !$0.isUppercase })
    }

    @Test("event ids are version 7 UUIDs: the millisecond first, so ids made later sort later; none repeats")
    func timeOrderedIDs() {
        let ms: UInt64 = 1_796_000_000_123
        let id = RandomID.timeOrderedUUID(milliseconds: ms)
        let parsed = UUID(uuidString: id)
        #expect(parsed != nil && id == id.lowercased() && id.count == 36, "\(id)")
        let bytes = parsed.map { withUnsafeBytes(of: $0.uuid) { Array($0) } } ?? []
        #expect(bytes.count == 16 && bytes[6] >> 4 == 7 && bytes[8] >> 6 == 2, "\(id) is not version 7, variant 10")
        #expect(bytes.prefix(6).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } == ms, "\(id) does not start with its millisecond")
        // A later millisecond sorts after every id of an earlier one, as text too (an index's order).
        let earlier = (0..<200).map { _ in RandomID.timeOrderedUUID(milliseconds: ms) }
        let later = (0..<200).map { _ in RandomID.timeOrderedUUID(milliseconds: ms + 1) }
        #expect(earlier.max()! < later.min()!)
        #expect(Set(earlier + later).count == 400)
        let now = RandomID.timeOrderedUUID()
        let clock = UInt64(Date().timeIntervalSince1970 * 1000)
        let stamped = UUID(uuidString: now).map { withUnsafeBytes(of: $0.uuid) { Array($0.prefix(6)) } }!.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        #expect(stamped <= clock && clock - stamped < 5_000, "\(now) is not stamped with the wall clock")
    }

    @Test("ids made at once on many threads do not repeat (they share one buffer of random words)")
    func randomIDsConcurrently() async {
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<8 { group.addTask { (0..<2_000).map { _ in RandomID.uuid() } } }
            return await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(ids.count == 16_000)
        #expect(Set(ids).count == ids.count)
    }
}
