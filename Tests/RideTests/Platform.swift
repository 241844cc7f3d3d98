import AsyncHTTPClient
import Contracts
import Foundation
import HailKit
import HailKitTesting
import HummingbirdWSClient
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import Testing

/// Redis, etcd, and login, order, matching, order-grab and the gateway — with `money`, coupon, payment
/// and settlement too — each as its own process, as the local run starts them. Redis is the platform's
/// own, so its streams start empty. With `orderShards` (`couponShards`, `paymentShards`) above one, order
/// (coupon, payment) runs as that many shards, one process each, and every service is told so
/// (`--shards coupon=M,order=N,payment=P`).
final class Platform: @unchecked Sendable {
    // Safe: used by one test task at a time.
    /// The platform's Redis: one server, or with `redisCluster` a cluster of six nodes.
    let redis: RedisServerProcess?
    let cluster: RedisClusterProcess?
    /// The port of the Redis (one node of the cluster).
    let redisPort: Int
    let prefix = "/" + TestEnvironment.unique("ride") + "/"
    let adminPhone = "+4915100000000"
    let adminPassword = "admin-pass-word"
    let login, order, matching, grab, gateway: ServiceProcess
    /// Every instance of matching: with `matchingCities`, the k-th city's is `matchings[k]` (`matching` is the first).
    let matchings: [ServiceProcess]
    /// Every instance of order: shard k is `orders[k]` (`order` is shard 0).
    let orders: [ServiceProcess]
    /// With `money`.
    let coupon, payment, settlement: ServiceProcess?
    /// With `money`, every instance of coupon and of payment: shard k is `coupons[k]` (`coupon` is shard 0).
    let coupons, payments: [ServiceProcess]
    /// With `analytics`.
    let analytics: ServiceProcess?

    init(
        matching matchingOptions: [String: String] = [:], order orderOptions: [String: String] = [:], money: Bool = false,
        payment paymentOptions: [String: String] = [:], analytics analyticsOptions: [String: String]? = nil,
        redisCluster: Bool = false, orderShards: Int = 1, couponShards: Int = 1, paymentShards: Int = 1,
        matchingCities: String? = nil
    ) throws {
        var redisOptions: [String: String] = [:]
        if redisCluster {
            let cluster = try RedisClusterProcess()
            (self.cluster, self.redis, redisPort) = (cluster, nil, cluster.ports[0])
            redisOptions = [
                "redis-cluster": "true",
                "redis-cluster-nodes": cluster.ports.dropFirst().map { "127.0.0.1:\($0)" }.joined(separator: ","),
            ]
        } else {
            let redis = try RedisServerProcess()
            (self.cluster, self.redis, redisPort) = (nil, redis, redis.port)
        }
        // Every service is told how order, coupon and payment are split.
        // Matching split by city: one instance per city of `matchingCities` (`matching.cities`).
        let matchingShards = matchingCities.map { $0.split(separator: ";").count } ?? 1
        let split = ShardMap(["order": orderShards, "coupon": couponShards, "payment": paymentShards, "matching": matchingShards])
        if !split.counts.isEmpty { redisOptions["shards"] = split.description }
        let prefix = self.prefix
        let redisPort = self.redisPort
        func make(_ name: String, _ options: [String: String] = [:]) throws -> ServiceProcess {
            try ServiceProcess(name, redisPort: redisPort, discoveryPrefix: prefix, options: redisOptions.merging(options) { $1 })
        }
        login = try make("login", ["auth-bcrypt-cost": "4", "auth-admin-phone": "+4915100000000", "auth-admin-password": "admin-pass-word"])
        // A split service: one process per shard, each told its own.
        func shards(_ name: String, _ count: Int, _ options: [String: String] = [:]) throws -> [ServiceProcess] {
            try (0..<max(1, count)).map { shard in try make(name, count > 1 ? options.merging(["shard": String(shard)]) { $1 } : options) }
        }
        orders = try shards("order", orderShards, orderOptions)
        order = orders[0]
        var matchingValues = ["matching-window-ms": "300"]
        for (key, value) in matchingOptions { matchingValues[key] = value }
        var gatewayValues = ["gateway-rate-auth-limit": "10000", "gateway-rate-limit": "10000", "client-discovery-cache-ms": "0"]
        if let matchingCities {
            matchingValues["matching-cities"] = matchingCities
            gatewayValues["matching-cities"] = matchingCities
        }
        matchings = try shards("matching", matchingShards, matchingValues)
        matching = matchings[0]
        grab = try make("order-grab")
        gateway = try make("gateway", gatewayValues)
        coupons = money ? try shards("coupon", couponShards) : []
        coupon = coupons.first
        payments = money ? try shards("payment", paymentShards, paymentOptions) : []
        payment = payments.first
        settlement = money ? try make("settlement", ["settlement-schedule-seconds": "0", "settlement-grace-seconds": "0"]) : nil
        analytics = try analyticsOptions.map { try make("analytics", $0) }
    }

    private var services: [ServiceProcess] {
        [login] + orders + matchings + [grab] + coupons + payments + [settlement, analytics].compactMap { $0 } + [gateway]
    }

    var api: String { gateway.baseURL + "/api/v1" }

    func start() async throws {
        for service in services { try await service.start() }
        // The gateway can route once every service's registration is in etcd.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let probe = try await send(.POST, "/auth/login", body: ["phone": "+10000000", "password": "x"])
            if probe.status != 503 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestProcessError("the gateway does not reach login")
    }

    /// One request through the gateway.
    func send(
        _ method: HTTPMethod, _ path: String, token: String? = nil, body: [String: Any]? = nil, idempotencyKey: String? = nil
    ) async throws -> TestResponse {
        var headers: [String: String] = [:]
        if let token { headers["Authorization"] = "Bearer \(token)" }
        if let idempotencyKey { headers["Idempotency-Key"] = idempotencyKey }
        return try await testRequest(method, api + path, json: body, headers: headers, timeout: .seconds(30))
    }

    /// Signs up (riders and drivers) and signs in; returns the account id and its access token.
    func account(_ role: String, name: String = "Test") async throws -> (id: String, token: String) {
        let phone = "+49" + String(Int.random(in: 1_000_000_000...9_999_999_999))
        let signUp = try await send(.POST, "/auth/signup", body: ["role": role, "phone": phone, "password": "pass-word-1", "name": name])
        try #require(signUp.status == 201, "sign-up failed: \(signUp.text)")
        return try await signIn(phone: phone, password: "pass-word-1")
    }

    func admin() async throws -> (id: String, token: String) {
        try await signIn(phone: adminPhone, password: adminPassword)
    }

    private func signIn(phone: String, password: String) async throws -> (id: String, token: String) {
        let signIn = try await send(.POST, "/auth/login", body: ["phone": phone, "password": password])
        try #require(signIn.status == 200, "sign-in failed: \(signIn.text)")
        let user = try #require(signIn.json["user"] as? [String: Any])
        return (try #require(user["id"] as? String), try #require(signIn.json["accessToken"] as? String))
    }

    /// Polls the order (as `token`) until `done` holds.
    func waitForOrder(
        _ id: String, token: String, timeout: Duration = .seconds(30), until done: ([String: Any]) -> Bool
    ) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        var last: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            let answer = try await send(.GET, "/rides/\(id)", token: token)
            last = answer.json
            if answer.status == 200, done(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("order \(id) did not get there in \(timeout); last seen \(last)\nmatching log:\n\(matching.output().suffix(4000))")
        throw TestProcessError("timed out")
    }

    func stopAll() {
        for service in services.reversed() { service.stop() }
        redis?.kill()
        cluster?.stopAll()
    }
}

/// A rider's or driver's WebSocket to the gateway, collecting what it is pushed.
final class PushInbox: Sendable {
    /// The pushes as the JSON text they came in.
    private let received = Mutex<[String]>([])
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)
    /// The close code the gateway sent, once the socket is closed (0 when it closed without one).
    private let closeCode = Mutex<Int?>(nil)

    private init() {}

    /// Connects and waits for the gateway's hello.
    static func connect(_ platform: Platform, token: String) async throws -> PushInbox {
        let inbox = PushInbox()
        let ticket = try await platform.send(.POST, "/ws/ticket", token: token)
        try #require(ticket.status == 201, "no WebSocket ticket: \(ticket.text)")
        let url = "ws://127.0.0.1:\(platform.gateway.port)/ws?ticket=\(try #require(ticket.json["ticket"] as? String))"
        let task = Task {
            var code = 0
            do {
                let frame = try await WebSocketClient.connect(url: url, logger: Logger(label: "push-inbox")) { inbound, _, _ in
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        guard case .text(let text) = message else { continue }
                        inbox.received.withLock { $0.append(text) }
                    }
                }
                if case .unknown(let number) = frame?.closeCode { code = Int(number) }
            } catch {}
            inbox.closeCode.withLock { $0 = code }
        }
        inbox.task.withLock { $0 = task }
        _ = try await inbox.waitFor(timeout: .seconds(10)) { $0["type"] as? String == "hello" }
        return inbox
    }

    /// Waits until a push matching `predicate` has arrived.
    func waitFor(timeout: Duration = .seconds(30), _ predicate: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let hit = messages.first(where: predicate) { return hit }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestProcessError("no such push within \(timeout); got \(received.withLock { $0 })")
    }

    var messages: [[String: Any]] {
        received.withLock { $0 }.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    func close() { task.withLock { $0?.cancel() } }

    /// Waits until the gateway closes the socket; its close code (4401: the session ended).
    func waitUntilClosed(timeout: Duration) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let code = closeCode.withLock({ $0 }) { return code }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestProcessError("the socket stayed open for \(timeout)")
    }
}

extension [String: Any] {
    var states: [String] {
        ((self["history"] as? [[String: Any]]) ?? []).compactMap { $0["to"] as? String }
    }
}
