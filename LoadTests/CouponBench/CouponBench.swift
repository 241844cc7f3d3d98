import ArgumentParser
import BenchSupport
import AsyncHTTPClient
import Contracts
import Foundation
import HailKit
import HailKitTesting
import NIOCore
import RedisKit

/// `hailstorm-coupon-bench`: flash-sale claims per second through a running `hailstorm-coupon` (HTTP,
/// token check, the claim's Lua script, the stream, storing in SQLite behind it) next to
/// `redis-benchmark` running the same Lua script on the same Redis, in the same run. Prints one JSON
/// object with claims/s, p50/p99 latency and the ratio.
@main
struct CouponBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hailstorm-coupon-bench",
        abstract: "Claims/s through the coupon service next to redis-benchmark running the same Lua script.")

    @Option(help: "Claims per round.")
    var requests: Int = 50_000

    @Option(help: "Concurrent connections (the service's clients, and redis-benchmark -c).")
    var connections: Int = 64

    @Option(help: "Rounds; each runs the service and redis-benchmark once; medians are reported.")
    var rounds: Int = 3

    @Option(help: "Path of redis-benchmark.")
    var redisBenchmark: String = "/usr/bin/redis-benchmark"

    @Option(help: "Run coupon on a six-node Redis Cluster (three masters, three replicas) with its stock over this many buckets; redis-benchmark is then left out (its fixed keys do not share a slot).")
    var clusterBuckets: Int?

    @Option(help: "With --cluster-buckets: the replicas each claim waits for (coupon.redis.wait.replicas).")
    var waitReplicas: Int = 0

    func run() async throws {
        let cluster = try clusterBuckets.map { _ in try RedisClusterProcess() }
        defer { cluster?.stopAll() }
        let redis = cluster == nil ? try RedisServerProcess() : nil
        let redisPorts = cluster?.ports ?? [redis!.port]
        try cluster?.waitUntilReplicated()
        let data = try TestEnvironment.temporaryDirectory("coupon-bench")
        let port = try TestEnvironment.freePort()
        let keys = try TokenKeys.generate(issuers: [AccessTokens.userIssuer, "coupon"])
        let jwksFile = data + "/jwks.json"
        try keys.jwks.write(toFile: jwksFile, atomically: true, encoding: .utf8)
        var arguments = [
            "--http-port", String(port), "--redis-port", String(redisPorts[0]), "--discovery-backend", "static",
            "--data-dir", data, "--auth-jwks-file", jwksFile, "--auth-signing-key", keys.privateKeys["coupon"]!,
            "--log-level", "warning",
        ]
        if let cluster, let clusterBuckets {
            arguments += [
                "--redis-cluster", "true", "--redis-cluster-nodes", cluster.ports.dropFirst().map { "127.0.0.1:\($0)" }.joined(separator: ","),
                "--coupon-stock-buckets", String(clusterBuckets), "--coupon-redis-wait-replicas", String(waitReplicas),
            ]
        }
        let service = try TestProcess(
            executable: TestEnvironment.executablesDirectory.appendingPathComponent("hailstorm-coupon").path,
            arguments: arguments, name: "coupon")
        defer { _ = service.terminate() }
        let redisPIDs = ProcessCPU.pids(listeningOn: redisPorts)
        let base = "http://127.0.0.1:\(port)"
        try await TestProcess.waitUntilReady(base + "/readyz")

        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let redisClient = RedisClient(configuration: cluster?.configuration() ?? RedisConfiguration(host: "127.0.0.1", port: redisPorts[0], poolSize: 1))
        var serviceRates: [Double] = [], serviceP50: [Double] = [], serviceP99: [Double] = []
        var couponCPU: [Double] = [], redisCPU: [Double] = []
        var theirRates: [Double] = [], theirP50: [Double] = [], theirP99: [Double] = []
        do {
            // 1,000 riders with a limit of 1,000 each and stock for every claim: every claim is granted, the
            // path that does the most (take the coupon, append to the stream, store it).
            let tokens = try await AccessTokens(
                service: "coupon-bench", signingKey: keys.privateKeys[AccessTokens.userIssuer], jwks: keys.jwks, cacheSize: 0)
            let now = Date()
            let admin = try await tokens.sign(AccessTokenClaims(
                userID: "bench-admin", role: .admin, tokenID: "a", issuedAt: now, expiresAt: now + 86400))
            var riders: [String] = []
            for i in 0..<1000 {
                riders.append(try await tokens.sign(AccessTokenClaims(
                    userID: "bench-rider-\(i)", role: .rider, tokenID: "r\(i)", issuedAt: now, expiresAt: now + 86400)))
            }
            let campaign = try await createCampaign(client, base: base, admin: admin, stock: requests * rounds + 1)

            for round in 1...max(rounds, 1) {
                let before = (ProcessCPU.seconds([service.pid]), ProcessCPU.seconds(redisPIDs))
                let (rate, latencies) = try await measureService(client, base: base, campaign: campaign, riders: riders)
                couponCPU.append((ProcessCPU.seconds([service.pid]) - before.0) / Double(latencies.count) * 1_000_000)
                redisCPU.append((ProcessCPU.seconds(redisPIDs) - before.1) / Double(latencies.count) * 1_000_000)
                serviceRates.append(rate)
                serviceP50.append(percentile(latencies, 0.50))
                serviceP99.append(percentile(latencies, 0.99))
                guard let redis else {
                    FileHandle.standardError.write(Data("round \(round): service \(Int(rate))/s\n".utf8))
                    continue
                }
                let theirs = try await measureRedisBenchmark(redisClient, port: redis.port, round: round)
                theirRates.append(theirs.rate)
                theirP50.append(theirs.p50)
                theirP99.append(theirs.p99)
                FileHandle.standardError.write(Data(
                    "round \(round): service \(Int(rate))/s, redis-benchmark \(Int(theirs.rate))/s\n".utf8))
            }
        } catch {
            try? await client.shutdown()
            await redisClient.shutdown()
            throw error
        }
        try await client.shutdown()
        await redisClient.shutdown()

        let viaService = median(serviceRates), reference = median(theirRates)
        let result: [String: Any] = [
            "requests_per_round": requests, "connections": connections, "rounds": rounds, "statistic": "median of rounds",
            "service_claims_per_s": viaService.rounded(), "service_p50_ms": median(serviceP50),
            "service_p99_ms": median(serviceP99),
            "redis_benchmark_claims_per_s": reference.rounded(), "redis_benchmark_p50_ms": median(theirP50),
            "redis_benchmark_p99_ms": median(theirP99),
            "ratio": reference > 0 ? viaService / reference : 0,
            "coupon_cpu_us_per_claim": median(couponCPU), "redis_cpu_us_per_claim": median(redisCPU),
            "redis": cluster == nil ? "one server" : "six-node cluster, \(clusterBuckets ?? 1) buckets, waiting for \(waitReplicas) replicas",
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted])
        FileHandle.standardOutput.write(json + Data("\n".utf8))
    }

    func createCampaign(_ client: HTTPClient, base: String, admin: String, stock: Int) async throws -> String {
        var request = HTTPClientRequest(url: base + "/v1/campaigns")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(admin)")
        request.headers.add(name: "Content-Type", value: "application/json")
        let now = Date().timeIntervalSince1970
        request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(CouponAPI.NewCampaign(
            name: "bench", city: "bench", kind: .amount, amountOffCents: 100, stock: stock, perUserLimit: 1000,
            startsAt: now - 1, endsAt: now + 86400))))
        let response = try await client.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        guard response.status == .created,
            let id = (try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any])?["id"] as? String
        else { throw ValidationError("campaign not created: \(response.status)") }
        return id
    }

    /// Closed loop: `connections` workers, each sending its next claim when the last is answered.
    func measureService(_ client: HTTPClient, base: String, campaign: String, riders: [String]) async throws -> (Double, [Double]) {
        let url = base + "/v1/campaigns/\(campaign)/claim"
        let perWorker = requests / connections
        let start = ContinuousClock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for worker in 0..<connections {
                group.addTask {
                    var samples: [Double] = []
                    samples.reserveCapacity(perWorker)
                    for i in 0..<perWorker {
                        var request = HTTPClientRequest(url: url)
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: "Bearer \(riders[(worker * perWorker + i) % riders.count])")
                        let t0 = ContinuousClock.now
                        let response = try await client.execute(request, timeout: .seconds(30))
                        _ = try await response.body.collect(upTo: 1 << 16)
                        guard response.status == .created else { throw ValidationError("claim answered \(response.status)") }
                        samples.append((ContinuousClock.now - t0).secondsValue * 1000)
                    }
                    return samples
                }
            }
            var all: [Double] = []
            for try await samples in group { all += samples }
            return all
        }
        let seconds = (ContinuousClock.now - start).secondsValue
        return (Double(latencies.count) / seconds, latencies.sorted())
    }

    /// The same script, with the same keys and arguments, from redis-benchmark.
    func measureRedisBenchmark(_ redis: RedisClient, port: Int, round: Int) async throws -> (rate: Double, p50: Double, p99: Double) {
        let figures = try await RedisBenchmarkReference(executable: redisBenchmark, port: port, connections: connections, requests: requests)
            .run(redis: redis, label: "round-\(round)")
        return (figures.rate, figures.p50Ms, figures.p99Ms)
    }
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.isEmpty ? 0 : s[s.count / 2]
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))]
}

/// CPU time of processes, from `/proc/PID/stat` (user + system).
enum ProcessCPU {
    static func seconds(_ pids: [Int32]) -> Double {
        pids.reduce(0) { total, pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return total }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the name: state is field 3, utime 14 and stime 15 of the whole line.
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return total }
            return total + (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
    }

    /// The redis-servers listening on `ports`.
    static func pids(listeningOn ports: [Int]) -> [Int32] {
        let all = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return all.compactMap(Int32.init).filter { pid in
            guard let raw = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { return false }
            // redis-server retitles itself `redis-server 127.0.0.1:PORT [cluster]`, padded with NULs.
            let words = raw.split(whereSeparator: { $0 == "\0" || $0 == " " })
            return words.first?.hasSuffix("redis-server") == true && ports.contains { words.contains(Substring("127.0.0.1:\($0)")) }
        }
    }
}
