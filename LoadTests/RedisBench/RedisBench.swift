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

    @Option(help: "Rounds; each runs every client once, and the median round of each counts.")
    var rounds: Int = 3

    @Option(help: "Path of redis-benchmark.")
    var redisBenchmark: String = "/usr/bin/redis-benchmark"

    @Option(help: "A node of a running Redis Cluster: compare RedisKit's pooled client on the cluster with the same client on one server (keys spread over every slot), each next to redis-benchmark (-r, and --cluster on the cluster).")
    var clusterPort: Int?

    func run() async throws {
        if let clusterPort { return try await compareCluster(clusterPort) }
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

        // Each round runs every client once, in turns, so drift in the machine hits all of them.
        var async: [String: [Double]] = [:]
        var loop: [String: [Double]] = [:]
        var theirs: [String: [Double]] = [:]
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        for round in 1...rounds {
            for test in ["SET", "GET"] {
                async[test, default: []].append(try await measureAsync(test: test, port: redisPort))
                loop[test, default: []].append(try await measureOnEventLoop(test: test, port: redisPort, group: group))
            }
            for (test, rate) in try runRedisBenchmark(port: redisPort) {
                theirs[test, default: []].append(rate)
            }
            FileHandle.standardError.write(Data(
                "round \(round): async \(async) event-loop \(loop) redis-benchmark \(theirs)\n".utf8))
        }

        try await group.shutdownGracefully()

        var result: [String: Any] = [
            "connections": connections, "pipeline": pipeline, "requests": requests, "value_bytes": size, "rounds": rounds,
            "statistic": "median of rounds",
        ]
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        }
        func rounded(_ value: Double, _ places: Double) -> Double { (value * places).rounded() / places }
        for test in ["SET", "GET"] {
            let reference = median(theirs[test] ?? [])
            let viaAsync = median(async[test] ?? [])
            let viaLoop = median(loop[test] ?? [])
            result[test.lowercased()] = [
                "redis_benchmark_ops_per_s": rounded(reference, 10),
                "redis_kit_event_loop_ops_per_s": rounded(viaLoop, 10),
                "redis_kit_async_ops_per_s": rounded(viaAsync, 10),
                "ratio_event_loop": reference > 0 ? rounded(viaLoop / reference, 1000) : 0,
                "ratio_async": reference > 0 ? rounded(viaAsync / reference, 1000) : 0,
            ]
        }
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted])
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    /// Like redis-benchmark: one event-loop thread drives every connection; each connection sends a batch
    /// of `pipeline` commands and, when its replies are in, the next. RedisKit's futures API, no thread hops.
    func measureOnEventLoop(test: String, port: Int, group: MultiThreadedEventLoopGroup) async throws -> Double {
        let configuration = RedisConfiguration(host: "127.0.0.1", port: port, poolSize: 1)
        var links: [RedisConnection] = []
        for _ in 0..<connections {
            links.append(try await RedisConnection.connect(to: configuration, on: group))
        }
        let batch = [RedisCommand](repeating: command(test), count: pipeline)
        let perConnection = requests / connections / pipeline
        let start = ContinuousClock.now
        let runs = links.map { link in
            let done = link.eventLoop.makePromise(of: Void.self)
            @Sendable func step(_ remaining: Int) {
                guard remaining > 0 else { return done.succeed() }
                link.pipelineFuture(batch).whenComplete { result in
                    switch result {
                    case .success(let replies):
                        if case .error(let message) = replies[0] { return done.fail(RedisError.server(message)) }
                        step(remaining - 1)
                    case .failure(let error):
                        done.fail(error)
                    }
                }
            }
            link.eventLoop.execute { step(perConnection) }
            return done.futureResult
        }
        for run in runs { try await run.get() }
        let elapsed = ContinuousClock.now - start
        for link in links { await link.close() }
        return Double(perConnection * pipeline * connections) / seconds(elapsed)
    }

    func command(_ test: String) -> RedisCommand {
        test == "SET"
            ? RedisCommand("SET", "key:__rand_int__", [UInt8](repeating: UInt8(ascii: "x"), count: size))
            : RedisCommand("GET", "key:__rand_int__")
    }

    func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// `connections` tasks, each on its own connection, each awaiting batches of `pipeline` commands
    /// through the async API: the cost of Swift concurrency's hop from the event loop to the task included.
    func measureAsync(test: String, port: Int) async throws -> Double {
        let configuration = RedisConfiguration(host: "127.0.0.1", port: port, poolSize: 1)
        var links: [RedisConnection] = []
        for _ in 0..<connections {
            links.append(try await RedisConnection.connect(to: configuration))
        }
        let batch = [RedisCommand](repeating: command(test), count: pipeline)
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
        return Double(perConnection * pipeline * connections) / seconds(elapsed)
    }

    func runRedisBenchmark(port: Int, randomKeys: Bool = false, cluster: Bool = false) throws -> [String: Double] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: redisBenchmark)
        process.arguments = [
            "-h", "127.0.0.1", "-p", String(port), "-c", String(connections), "-n", String(requests),
            "-P", String(pipeline), "-d", String(size), "-t", "set,get", "--csv",
        ] + (randomKeys ? ["-r", "100000"] : []) + (cluster ? ["--cluster"] : [])
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

    /// The pooled client (`RedisClient.pipeline`, as the services use it) against one server and against
    /// the cluster: `connections` tasks each sending batches of `pipeline` commands with random keys, so a
    /// cluster batch is split over the masters. redis-benchmark beside each, with random keys (`-r`).
    /// CPU per command is this process's (the client's) user + system time over the commands it sent.
    func compareCluster(_ clusterPort: Int) async throws {
        let (server, serverPort) = try startRedis()
        defer {
            kill(server.processIdentifier, SIGTERM)
            for _ in 0..<100 where server.isRunning { usleep(20_000) }
        }
        let single = RedisConfiguration(port: serverPort, poolSize: 4)
        let cluster = RedisConfiguration(port: clusterPort, poolSize: 4, cluster: true)
        var figures: [String: [String: [Double]]] = [:]
        for round in 1...rounds {
            for test in ["SET", "GET"] {
                for (name, configuration) in [("one_server", single), ("cluster", cluster)] {
                    let (rate, cpu) = try await measureClient(test: test, configuration: configuration)
                    figures[name + "." + test, default: [:]]["redis_kit_ops_per_s", default: []].append(rate)
                    figures[name + "." + test, default: [:]]["redis_kit_client_cpu_us_per_op", default: []].append(cpu)
                }
            }
            for (name, port, clustered) in [("one_server", serverPort, false), ("cluster", clusterPort, true)] {
                for (test, rate) in try runRedisBenchmark(port: port, randomKeys: true, cluster: clustered) {
                    figures[name + "." + test, default: [:]]["redis_benchmark_ops_per_s", default: []].append(rate)
                }
            }
            FileHandle.standardError.write(Data("round \(round): \(figures)\n".utf8))
        }
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        }
        var result: [String: Any] = [
            "connections": connections, "pipeline": pipeline, "requests": requests, "value_bytes": size, "rounds": rounds,
            "statistic": "median of rounds",
        ]
        for (name, values) in figures {
            result[name] = values.mapValues { (median($0) * 10).rounded() / 10 }
        }
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted])
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    func measureClient(test: String, configuration: RedisConfiguration) async throws -> (opsPerSecond: Double, cpuMicroseconds: Double) {
        let client = RedisClient(configuration: configuration)
        let value = [UInt8](repeating: UInt8(ascii: "x"), count: size)
        let batches = (0..<64).map { _ in
            (0..<pipeline).map { _ in
                let key = "key:\(Int.random(in: 0..<100_000))"
                return test == "SET" ? RedisCommand("SET", key, value) : RedisCommand("GET", key)
            }
        }
        _ = try await client.pipeline(batches[0])  // connections and the slot map, before the clock starts
        let perConnection = requests / connections / pipeline
        let cpuBefore = Self.cpuTime()
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<connections {
                group.addTask {
                    for index in 0..<perConnection {
                        let replies = try await client.pipeline(batches[(worker + index) % batches.count])
                        if case .error(let message) = replies[0] { throw RedisError.server(message) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - start
        let cpu = Self.cpuTime() - cpuBefore
        await client.shutdown()
        let sent = Double(perConnection * pipeline * connections)
        return (sent / seconds(elapsed), cpu * 1e6 / sent)
    }

    /// This process's user + system CPU time so far, in seconds.
    static func cpuTime() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
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
