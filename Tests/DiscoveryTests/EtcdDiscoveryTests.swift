import AsyncHTTPClient
import Discovery
import Foundation
import HailKitTesting
import Testing

@Suite("Discovery through a real etcd", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"))
struct EtcdDiscoveryTests {
    func discovery(prefix: String, ttl: Duration = .seconds(2)) -> EtcdDiscovery {
        EtcdDiscovery(endpoint: TestEnvironment.etcdEndpoint, prefix: prefix, ttl: ttl)
    }

    @Test("an instance appears when registered, a watcher sees it come and go")
    func registerAndDeregister() async throws {
        let prefix = "/" + TestEnvironment.unique("hailstorm-test") + "/"
        let discovery = self.discovery(prefix: prefix)
        let watch = discovery.watch(service: "login")
        var changes = watch.makeAsyncIterator()

        let instance = ServiceInstance(id: "login-a", service: "login", host: "127.0.0.1", port: 9001)
        let registration = try await discovery.register(instance)
        #expect(try await discovery.instances(of: "login") == [instance])
        #expect(try await discovery.instances(of: "gateway").isEmpty)
        #expect(try await changes.next() == .added(instance))

        try await registration.deregister()
        #expect(try await discovery.instances(of: "login").isEmpty)
        #expect(try await changes.next() == .removed(instanceID: "login-a", service: "login"))
    }

    @Test("a registration that is kept alive outlives its TTL")
    func keepAlive() async throws {
        let prefix = "/" + TestEnvironment.unique("hailstorm-test") + "/"
        let discovery = self.discovery(prefix: prefix, ttl: .seconds(1))
        let instance = ServiceInstance(id: "order-1", service: "order", host: "127.0.0.1", port: 9002)
        let registration = try await discovery.register(instance)
        let keeper = Task { try await registration.keepAlive() }
        try await Task.sleep(for: .seconds(3))
        #expect(try await discovery.instances(of: "order") == [instance])
        keeper.cancel()
        try await registration.deregister()
    }

    @Test("a service process killed with SIGKILL disappears within its lease TTL, and the watcher sees it")
    func killedProcessDisappears() async throws {
        let prefix = "/" + TestEnvironment.unique("hailstorm-test") + "/"
        let discovery = self.discovery(prefix: prefix)
        let instanceID = TestEnvironment.unique("login")
        let watch = discovery.watch(service: "login")
        var changes = watch.makeAsyncIterator()
        let data = try TestEnvironment.temporaryDirectory("login-data")

        let process = try TestProcess(
            executable: TestEnvironment.executablesDirectory.appendingPathComponent("hailstorm-login").path,
            arguments: [
                "--http-port", "0", "--instance-id", instanceID, "--discovery-prefix", prefix,
                "--discovery-ttl-seconds", "2", "--discovery-etcd-endpoint", TestEnvironment.etcdEndpoint,
                "--redis-port", String(TestEnvironment.redisPort), "--data-dir", data, "--auth-bcrypt-cost", "4",
                "--auth-jwks-file", TestKeys.jwksFile, "--auth-signing-key", TestKeys.privateKey("login") ?? "",
            ],
            name: "login")

        let added = try await changes.next()
        guard case .added(let instance) = added else {
            Issue.record("expected the login process to register, got \(String(describing: added)); output: \(process.output())")
            return
        }
        #expect(instance.id == instanceID)
        #expect(try await discovery.instances(of: "login").map(\.id) == [instanceID])
        // It is really serving where it says it is.
        let health = try await testRequest(.GET, instance.baseURL + "/healthz")
        #expect(health.status == 200)

        let killedAt = ContinuousClock.now
        process.kill(SIGKILL)
        let removed = try await changes.next()
        let elapsed = ContinuousClock.now - killedAt
        #expect(removed == .removed(instanceID: instanceID, service: "login"))
        // The lease is renewed every TTL/3, so at most the TTL remains when the process dies;
        // etcd checks expiry every 500 ms, hence the allowance.
        #expect(elapsed <= .milliseconds(2_500), "gone after \(elapsed)")
        #expect(try await discovery.instances(of: "login").isEmpty)
    }

    @Test("a service stopped with SIGTERM deregisters at once, long before its lease would end, and exits cleanly")
    func gracefulStopDeregisters() async throws {
        let prefix = "/" + TestEnvironment.unique("hailstorm-test") + "/"
        let discovery = self.discovery(prefix: prefix)
        let instanceID = TestEnvironment.unique("login")
        var changes = discovery.watch(service: "login").makeAsyncIterator()
        let process = try TestProcess(
            executable: TestEnvironment.executablesDirectory.appendingPathComponent("hailstorm-login").path,
            arguments: [
                "--http-port", "0", "--instance-id", instanceID, "--discovery-prefix", prefix,
                "--discovery-ttl-seconds", "30", "--discovery-etcd-endpoint", TestEnvironment.etcdEndpoint,
                "--redis-port", String(TestEnvironment.redisPort),
                "--data-dir", try TestEnvironment.temporaryDirectory("login-data"),
                "--auth-jwks-file", TestKeys.jwksFile, "--auth-signing-key", TestKeys.privateKey("login") ?? "",
            ],
            name: "login")
        guard case .added = try await changes.next() else {
            Issue.record("the login process did not register: \(process.output())")
            return
        }
        let stoppedAt = ContinuousClock.now
        let status = process.terminate(SIGTERM)
        #expect(try await changes.next() == .removed(instanceID: instanceID, service: "login"))
        // Deregistered by the process itself: a 30 s lease would have kept it listed much longer.
        #expect(ContinuousClock.now - stoppedAt < .seconds(10))
        #expect(status == 0, "exit status \(status): \(process.output())")
    }

    @Test("an unreachable etcd is reported as a discovery error")
    func unreachable() async throws {
        let port = try TestEnvironment.freePort()
        let discovery = EtcdDiscovery(endpoint: "http://127.0.0.1:\(port)")
        await #expect(throws: DiscoveryError.self) { try await discovery.ping() }
    }
}

@Suite("Static discovery")
struct StaticDiscoveryTests {
    @Test("a service name is a host name unless an address is given")
    func resolution() async throws {
        let discovery = StaticDiscovery(parsing: "login=10.1.0.5:9001, login=10.1.0.6:9001", defaultPort: 8080)
        #expect(try await discovery.instances(of: "login").map(\.baseURL) == ["http://10.1.0.5:9001", "http://10.1.0.6:9001"])
        #expect(try await discovery.instances(of: "order").map(\.baseURL) == ["http://order:8080"])
    }

    @Test("a split service's instances are named with their shard: order#1 is the one owning shard 1")
    func shards() async throws {
        let discovery = StaticDiscovery(
            parsing: "order#0=order-0.order-shards:8080,order#1=order-1.order-shards:8080, login=login:9001", defaultPort: 8080)
        let orders = try await discovery.instances(of: "order")
        #expect(orders.map(\.shard) == [0, 1])
        #expect(orders.map(\.host) == ["order-0.order-shards", "order-1.order-shards"])
        #expect(try await discovery.instances(of: "login").map(\.shard) == [nil])
    }
}
