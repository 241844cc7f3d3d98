import Foundation
import HailKit
import RedisKit

/// A Redis Cluster of a test's own: `nodes` Debian redis-servers in cluster mode on free loopback ports,
/// joined by `redis-cli --cluster create` with `replicas` replicas per master (6 and 1: three masters,
/// each with a replica that takes over when it dies).
public final class RedisClusterProcess: @unchecked Sendable {
    // Mutated only by the owning test, one call at a time.
    public let ports: [Int]
    private let directory: String
    private var servers: [Int: TestProcess] = [:]

    /// A node's failure is noticed within this, and its replica promoted soon after.
    public static let nodeTimeoutMilliseconds = 1000

    public init(nodes: Int = 6, replicas: Int = 1) throws {
        // Each node listens on its port and talks to the others on a bus port of its own (`cluster-port`;
        // by default port + 10,000, which may be taken or out of range).
        var taken = Set<Int>()
        while taken.count < nodes * 2 { taken.insert(try TestEnvironment.freePort()) }
        let chosen = Array(taken)
        ports = Array(chosen[..<nodes])
        let busPorts = Dictionary(uniqueKeysWithValues: zip(ports, chosen[nodes...]))
        directory = try TestEnvironment.temporaryDirectory("redis-cluster")
        for port in ports {
            servers[port] = try TestProcess(
                executable: "/usr/bin/redis-server",
                arguments: [
                    "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", directory, "--cluster-enabled", "yes", "--cluster-config-file", "nodes-\(port).conf",
                    "--cluster-node-timeout", String(Self.nodeTimeoutMilliseconds), "--cluster-port", String(busPorts[port]!),
                    // A replica's first sync at once, not after Redis's default 5 s of waiting for more
                    // replicas to share it: until that sync a replica cannot take over.
                    "--repl-diskless-sync-delay", "0",
                ],
                name: "redis-cluster-\(port)")
        }
        for port in ports {
            var up = false
            for _ in 0..<100 where !up {
                up = LoopbackPorts.isListening(port)
                if !up { usleep(20_000) }
            }
            guard up else { throw TestProcessError("redis-server \(port) did not start: \(servers[port]?.output() ?? "")") }
        }
        let created = try Self.cli(
            ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", String(replicas), "--cluster-yes"])
        guard created.status == 0 else { throw TestProcessError("redis-cli --cluster create failed: \(created.output)") }
        try waitUntilServing(ports, masters: nodes / (replicas + 1))
    }

    /// The client configuration for this cluster: every node a seed.
    public func configuration(reconnectWindow: Duration = .seconds(1), poolSize: Int = 2) -> RedisConfiguration {
        RedisConfiguration(
            port: ports[0], poolSize: poolSize, reconnectWindow: reconnectWindow, cluster: true,
            clusterNodes: ports.dropFirst().map { RedisNode(host: "127.0.0.1", port: $0) })
    }

    /// `redis-cli` against one node; its output.
    @discardableResult
    public func cli(_ port: Int, _ arguments: String...) throws -> String {
        try cli(port, arguments)
    }

    @discardableResult
    public func cli(_ port: Int, _ arguments: [String]) throws -> String {
        let result = try Self.cli(["-p", String(port)] + arguments)
        guard result.status == 0 else { throw TestProcessError("redis-cli -p \(port) \(arguments): \(result.output)") }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The node's id in the cluster.
    public func nodeID(_ port: Int) throws -> String { try cli(port, "CLUSTER", "MYID") }

    /// The port of the master serving `slot`, as that node's own view says.
    public func master(ofSlot slot: Int, askingPort port: Int? = nil) throws -> Int? {
        let lines = try cli(port ?? ports[0], "CLUSTER", "NODES").split(separator: "\n")
        for line in lines {
            let fields = line.split(separator: " ")
            guard fields.count >= 8, fields[2].contains("master"), !fields[2].contains("fail") else { continue }
            let address = fields[1].split(separator: "@")[0]
            for range in fields.dropFirst(8) where !range.hasPrefix("[") {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                if let low = bounds.first, slot >= low, slot <= (bounds.count > 1 ? bounds[1] : low) {
                    return address.split(separator: ":").last.flatMap { Int($0) }
                }
            }
        }
        return nil
    }

    /// The live masters' ports.
    public func masterPorts() throws -> [Int] {
        let alive = servers.keys.first { servers[$0]?.isRunning == true } ?? ports[0]
        return try cli(alive, "CLUSTER", "NODES").split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 8, fields[2].contains("master"), !fields[2].contains("fail") else { return nil }
            return fields[1].split(separator: "@")[0].split(separator: ":").last.flatMap { Int($0) }
        }.sorted()
    }

    /// Waits until every live master's replicas are online and have everything it wrote so far.
    public func waitUntilReplicated(timeout: Duration = .seconds(30)) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let caughtUp = try masterPorts().allSatisfy { port in
                let info = (try? cli(port, "INFO", "replication")) ?? ""
                func value(_ name: String) -> String? {
                    info.split(whereSeparator: \.isNewline).first { $0.hasPrefix(name + ":") }.map { String($0.dropFirst(name.count + 1)) }
                }
                guard let offset = value("master_repl_offset"), let replicas = value("connected_slaves").flatMap({ Int($0) }),
                    replicas > 0
                else { return false }
                return (0..<replicas).allSatisfy { index in
                    let fields = value("slave\(index)")?.split(separator: ",") ?? []
                    return fields.contains("state=online") && fields.contains(Substring("offset=\(offset)"))
                }
            }
            if caughtUp { return }
            usleep(50_000)
        }
        throw TestProcessError("the replicas did not catch up within \(timeout)")
    }

    /// Stops every node.
    public func stopAll() {
        for port in Array(servers.keys) { kill(port) }
    }

    /// A crash of one node (SIGKILL).
    public func kill(_ port: Int) {
        servers[port]?.kill(SIGKILL)
        servers[port] = nil
    }

    /// Waits until every node still running says the cluster is `ok`, sees every slot served and, with
    /// `masters`, sees that many masters and every other node as a replica (the roles `--cluster create`
    /// hands out reach each node by gossip, a moment later).
    public func waitUntilServing(_ nodes: [Int]? = nil, masters: Int? = nil, timeout: Duration = .seconds(30)) throws {
        let deadline = ContinuousClock.now + timeout
        let watched = nodes ?? Array(servers.keys)
        while ContinuousClock.now < deadline {
            let states = watched.map { port in (try? cli(port, "CLUSTER", "INFO")) ?? "" }
            let served = states.allSatisfy { $0.contains("cluster_state:ok") && $0.contains("cluster_slots_ok:16384") }
            let settled = masters.map { count in
                watched.allSatisfy { port in
                    let lines = ((try? cli(port, "CLUSTER", "NODES")) ?? "").split(separator: "\n")
                    let roles = lines.map { $0.split(separator: " ").dropFirst(2).first ?? "" }
                    return roles.filter { $0.contains("master") }.count == count
                        && roles.filter { $0.contains("slave") }.count == watched.count - count
                }
            } ?? true
            if served && settled { return }
            usleep(100_000)
        }
        throw TestProcessError("the cluster did not reach cluster_state:ok within \(timeout)")
    }

    private static func cli(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    deinit {
        for server in servers.values { server.kill() }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
