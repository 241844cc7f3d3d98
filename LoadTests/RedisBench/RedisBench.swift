import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import RedisKit

/// `hailstorm-redis-bench`: RedisKit's pipelined GET/SET throughput next to `redis-benchmark`, against the
/// same server with the same connections and pipeline depth, in the same run. Prints one JSON object.
@main
struct RedisBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hailstorm-redis-bench",
        abstract: "Compare RedisKit's pipelined GET/SET throughput with redis-benchmark on the same server.")

    @Option(help: "Redis port; when omitted a redis-server of its own is started on a free loopback port.")
    var port: Int?

    @Option(help: "Connections (redis-benchmark -c).")
    var connections: Int = 50

    @Option(help: "Pipeline depth (redis-benchmark -P).")
    var pipeline: Int = 16

    @Option(help: "Requests per test (redis-benchmark -n).")
    var requests: Int = 1_000_000

    @Option(help: "Value size in bytes (redis-benchmark -d).")
    var size: Int = 3

    @Option(help: "Rounds; each runs both clients, and the best round of each counts.")
    var rounds: Int = 3

    @Option(help: "Path of redis-benchmark.")
    var redisBenchmark: String = "/usr/bin/redis-benchmark"

    func run() async throws {
        var server: Process? = nil
        let redisPort: Int
        if let port {
            redisPort = port
        } else {
            (server, redisPort) = try startRedis()
        }
        defer {
            if let server {
                // Not `waitUntilExit`: it can stall inside an async command; polling is enough here.
                kill(server.processIdentifier, SIGTERM)
                for _ in 0..<100 where server.isRunning { usleep(20_000) }
            }
        }

        var ours: [String: Double] = [:]
        var theirs: [String: Double] = [:]
        for round in 1...rounds {
            for test in ["SET", "GET"] {
                let rate = try await measureRedisKit(test: test, port: redisPort)
                ours[test] = max(ours[test] ?? 0, rate)
            }
            for (test, rate) in try runRedisBenchmark(port: redisPort) {
                theirs[test] = max(theirs[test] ?? 0, rate)
            }
            FileHandle.standardError.write(Data("round \(round): redis-kit \(ours) redis-benchmark \(theirs)\n".utf8))
        }

        var result: [String: Any] = [
            "connections": connections, "pipeline": pipeline, "requests": requests, "value_bytes": size, "rounds": rounds,
        ]
        for test in ["SET", "GET"] {
            let mine = ours[test] ?? 0
            let reference = theirs[test] ?? 0
            result[test.lowercased()] = [
                "redis_kit_ops_per_s": (mine * 10).rounded() / 10,
                "redis_benchmark_ops_per_s": (reference * 10).rounded() / 10,
                "ratio": reference > 0 ? ((mine / reference) * 1000).rounded() / 1000 : 0,
            ]
        }
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted])
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    /// `connections` tasks, each on its own connection, each sending batches of `pipeline` commands
    /// and waiting for the batch's replies — what redis-benchmark's clients do.
    func measureRedisKit(test: String, port: Int) async throws -> Double {
        let configuration = RedisConfiguration(host: "127.0.0.1", port: port, poolSize: 1)
        var links: [RedisConnection] = []
        for _ in 0..<connections {
            links.append(try await RedisConnection.connect(to: configuration))
        }
        let value = [UInt8](repeating: UInt8(ascii: "x"), count: size)
        let command = test == "SET"
            ? RedisCommand("SET", "key:__rand_int__", value)
            : RedisCommand("GET", "key:__rand_int__")
        let batch = [RedisCommand](repeating: command, count: pipeline)
        let perConnection = requests / connections / pipeline
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for link in links {
                group.addTask {
                    for _ in 0..<perConnection {
                        let replies = try await link.pipeline(batch)
                        if case .error(let message) = replies[0] { throw RedisError.server(message) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - start
        for link in links { await link.close() }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Double(perConnection * pipeline * connections) / seconds
    }

    func runRedisBenchmark(port: Int) throws -> [String: Double] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: redisBenchmark)
        process.arguments = [
            "-h", "127.0.0.1", "-p", String(port), "-c", String(connections), "-n", String(requests),
            "-P", String(pipeline), "-d", String(size), "-t", "set,get", "--csv",
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        var rates: [String: Double] = [:]
        for line in String(decoding: output, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            if fields.count >= 2, ["SET", "GET"].contains(fields[0]), let rate = Double(fields[1]) {
                rates[fields[0]] = rate
            }
        }
        guard rates.count == 2 else {
            throw ValidationError("redis-benchmark printed no SET/GET figures: \(String(decoding: output, as: UTF8.self))")
        }
        return rates
    }

    func startRedis() throws -> (Process, Int) {
        let port = Int.random(in: 20_000..<40_000)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        Thread.sleep(forTimeInterval: 0.5)
        return (process, port)
    }
}
