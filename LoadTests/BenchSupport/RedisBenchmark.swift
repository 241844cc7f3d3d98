import Contracts
import Foundation
import RedisKit

/// `redis-benchmark` running the flash sale's claim script (`FlashSaleScript.claim`) by SHA, with the
/// same keys and arguments the coupon service passes, against a given Redis: the raw rate of the Lua path,
/// the reference every figure of the claim path through the services is set against.
public struct RedisBenchmarkReference: Sendable {
    public var executable: String
    public var port: Int
    public var connections: Int
    public var requests: Int

    public init(executable: String = "/usr/bin/redis-benchmark", port: Int, connections: Int, requests: Int) {
        self.executable = executable
        self.port = port
        self.connections = connections
        self.requests = requests
    }

    public struct Figures: Sendable, Codable {
        public var rate: Double
        public var p50Ms: Double
        public var p99Ms: Double
    }

    /// One run: every call a grant for a random one of 1,000 riders (limit 1,000 each, stock for all), the
    /// path that does the most — take a coupon, record the rider, append the claim to a stream.
    public func run(redis: RedisClient, label: String) async throws -> Figures {
        guard let sha = try await redis.send(RedisCommand("SCRIPT", "LOAD", FlashSaleScript.claim)).string else {
            throw BenchError("SCRIPT LOAD failed")
        }
        let prefix = "bench-rb-\(label)"
        let now = Int(Date().timeIntervalSince1970 * 1000)
        _ = try await redis.pipeline([
            RedisCommand("SET", "\(prefix):stock", requests * 2),
            RedisCommand("HSET", "\(prefix):meta", "start_ms", now - 1000, "end_ms", now + 86_400_000, "limit", 1000),
        ])
        let payload = #"{"campaignID":"bench","claimID":"x","claimedAt":0,"userID":"u"}"#
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "-p", String(port), "-c", String(connections), "-n", String(requests), "-r", "1000", "--csv",
            "EVALSHA", sha, "5", "\(prefix):stock", "\(prefix):users", "\(prefix):meta", "\(prefix):claims", "",
            "rider-__rand_int__", "claim-id", "event-id", "coupon.claimed", "bench", "0", payload,
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        _ = try await redis.send(RedisCommand("DEL", "\(prefix):stock", "\(prefix):users", "\(prefix):meta", "\(prefix):claims"))
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("\"EVALSHA") }) else {
            throw BenchError("unexpected redis-benchmark output: \(output)")
        }
        // The test name holds the command line (commas included): the figures are the last seven fields.
        let fields = line.split(separator: ",").suffix(7).map { Double($0.trimmingCharacters(in: CharacterSet(charactersIn: "\""))) }
        guard fields.count == 7, let rate = fields[0], let p50 = fields[3], let p99 = fields[5] else {
            throw BenchError("unexpected redis-benchmark line: \(line)")
        }
        return Figures(rate: rate, p50Ms: p50, p99Ms: p99)
    }
}

public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
