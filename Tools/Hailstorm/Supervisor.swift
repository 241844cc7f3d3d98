import AsyncHTTPClient
import Contracts
import Foundation
import HailKit
import Logging
import ServiceLifecycle

/// One process the supervisor keeps alive: redis-server, etcd, or an instance of a service.
struct ChildSpec: Sendable {
    var service: String
    var instance: String
    /// The port it is started on, or nil for a service started on port 0 that reports the port it bound
    /// in `portFile` (so no port is guessed first and then taken by someone else before it binds).
    var port: Int?
    var portFile: String?
    var executable: String
    var arguments: [String]
    var environment: [String: String] = [:]
    var log: String
    /// How to tell it is ready.
    var readiness: Readiness

    enum Readiness: Sendable {
        /// Accepts TCP connections (redis-server).
        case listening
        /// `GET <path>` answers 200 (etcd's `/health`, a service's `/readyz`).
        case http(String)
    }
}

/// A supervised process: when it dies it is started again, after a backoff that grows while it keeps
/// dying young (0.5 s, 1 s, 2 s… up to 30 s), and each restart is logged — what Kubernetes does for a pod.
final class Child {
    let spec: ChildSpec
    private(set) var process: Process?
    private(set) var startedAt: Date?
    /// Where it listens now: the fixed port, or the one it reported since it last started.
    private(set) var port: Int?
    var restarts = 0
    var health = "starting"
    var lastExit: String?
    var restartAt: ContinuousClock.Instant?
    private var youngDeaths = 0

    init(_ spec: ChildSpec) {
        self.spec = spec
    }

    var isRunning: Bool { process?.isRunning ?? false }

    func start() throws {
        FileManager.default.createFile(atPath: spec.log, contents: nil, attributes: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: spec.log))
        handle.seekToEndOfFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: spec.executable)
        process.arguments = spec.arguments
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in spec.environment { environment[key] = value }
        process.environment = environment
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        if let portFile = spec.portFile { try? FileManager.default.removeItem(atPath: portFile) }
        port = spec.port
        try process.run()
        try? handle.close()
        self.process = process
        startedAt = Date()
        health = "starting"
        restartAt = nil
    }

    /// Notes the exit of a process that died and when to start it again.
    func died(now: ContinuousClock.Instant) -> Duration {
        let status = process.map { process in
            process.terminationReason == .uncaughtSignal ? "killed by signal \(process.terminationStatus)" : "exited with status \(process.terminationStatus)"
        } ?? "gone"
        lastExit = "\(status) at \(Date().ISO8601Format())"
        let lived = startedAt.map { Date().timeIntervalSince($0) } ?? 0
        youngDeaths = lived < 30 ? youngDeaths + 1 : 1
        let delay = Duration.milliseconds(min(30_000, 500 << min(youngDeaths - 1, 10)))
        restartAt = now + delay
        health = "restarting"
        return delay
    }

    /// Reads the port a service started on port 0 reported, once it has.
    func learnPort() {
        guard port == nil, let portFile = spec.portFile,
            let text = try? String(contentsOfFile: portFile, encoding: .utf8),
            let reported = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), (1...65535).contains(reported)
        else { return }
        port = reported
    }

    func signal(_ signal: Int32) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }
}

/// Keeps a local Hailstorm running: Redis, etcd and every service instance as child processes, each with
/// its own log file and data folder; restarts what dies; probes readiness every second and writes
/// `state.json`; at SIGTERM or SIGINT stops the services (SIGTERM, then SIGKILL after 15 s) and then the
/// backends. Only its own run loop touches the children.
final class Supervisor: Service, @unchecked Sendable {
    // Safe: `children` and `state` are used by `run()` alone, one step at a time.
    private let folder: RunFolder
    private let backends: [Child]
    private let services: [Child]
    private let gateway: String
    private let logger: Logger
    private let startedAt = Date()
    /// Prometheus's discovery file, when the run has Prometheus.
    private let targets: ScrapeTargets?
    private let redis: RedisPlan

    init(folder: RunFolder, plan: RunPlan, logger: Logger) throws {
        self.folder = folder
        self.logger = logger
        guard let etcdPort = LoopbackPorts.free(), let peerPort = LoopbackPorts.free() else {
            throw RunnerError("no free loopback ports")
        }
        let etcd = "http://127.0.0.1:\(etcdPort)"
        let redis = try RedisPlan(nodes: plan.redisCluster, data: folder.data)
        self.redis = redis
        let redisServer = try Self.find("redis-server")
        backends = redis.ports.indices.map { index in
            Child(ChildSpec(
                service: "redis", instance: redis.instance(index), port: redis.ports[index], executable: redisServer,
                arguments: redis.arguments(index), log: folder.log(redis.instance(index)), readiness: .listening))
        } + [
            Child(ChildSpec(
                service: "etcd", instance: "etcd", port: etcdPort, executable: try Self.find("etcd"),
                arguments: [
                    "--name", "hailstorm", "--data-dir", folder.data + "/etcd",
                    "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
                    "--listen-peer-urls", "http://127.0.0.1:\(peerPort)",
                    "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
                    "--initial-cluster", "hailstorm=http://127.0.0.1:\(peerPort)",
                ],
                log: folder.log("etcd"), readiness: .http("/health"))),
        ]
        try FileManager.default.createDirectory(atPath: folder.ports, withIntermediateDirectories: true)
        // Prometheus's port is chosen first: the command centre reads the board and the alerts from it.
        var prometheusPort: Int? = nil
        if plan.prometheus != nil {
            guard let port = LoopbackPorts.free() else { throw RunnerError("no free loopback port for Prometheus") }
            prometheusPort = port
        }
        let keys = try folder.tokenKeys(services: ServiceCatalog.all.map(\.name))
        let admin = try folder.admin()
        var services: [Child] = []
        // How the sharded services are split, told to every instance of every service (each calls the
        // owner of what it asks about).
        let shards = ShardMap(Dictionary(uniqueKeysWithValues: ServiceCatalog.all.filter(\.sharded).map { ($0.name, plan.replicas[$0.name] ?? 1) }))
        for service in ServiceCatalog.all {
            for index in 1...max(1, plan.replicas[service.name] ?? 1) {
                let instance = "\(service.name)-\(index)"
                // The gateway keeps the user's port; every other instance binds port 0 and reports the port
                // it got, a new one at each start.
                let fixed = service.name == "gateway" && index == 1
                let portFile = fixed ? nil : folder.ports + "/\(instance)"
                var options = [
                    "http-port": fixed ? String(plan.gatewayPort) : "0", "discovery-etcd-endpoint": etcd,
                    "data-dir": folder.data + "/\(instance)", "instance-id": instance,
                ].merging(redis.serviceOptions(service.name)) { $1 }
                if let portFile { options["http-port-file"] = portFile }
                if !shards.counts.isEmpty { options["shards"] = shards.description }
                if shards.isSharded(service.name) { options["shard"] = String(index - 1) }
                if service.name == "command", let prometheusPort { options["command-prometheus-url"] = "http://127.0.0.1:\(prometheusPort)" }
                // The gateway sends an ad to the shard of its place's city: it reads the ad service's cities.
                if service.name == "gateway", let cities = plan.options["ad"]?["ad-cities"] { options["ad-cities"] = cities }
                // Matching split by city: the gateway sends a driver's fixes to their city's instance.
                if service.name == "gateway", let cities = plan.options["matching"]?["matching-cities"] { options["matching-cities"] = cities }
                for (key, value) in plan.options[service.name] ?? [:] { options[key] = value }
                // Each service gets its own private key and every public key; only login's signs users' tokens.
                var environment = ["AUTH_JWKS": keys.jwks, "AUTH_SIGNING_KEY": keys.privateKeys[service.name] ?? ""]
                // One event loop per service (SwiftNIO's own setting; set it in the environment to change it):
                // every service shares this machine's cores, and a second loop in each of ten processes cost a
                // rush hour 7–10 % more CPU in thread switches (docs/benchmarks.md). In Kubernetes a pod's CPU
                // limit decides, as NIO reads it from the cgroup.
                environment["NIO_SINGLETON_GROUP_LOOP_COUNT"] = ProcessInfo.processInfo.environment["NIO_SINGLETON_GROUP_LOOP_COUNT"] ?? "1"
                if service.name == "ad" { environment["AD_TOKEN_KEY"] = try folder.adTokenKey() }
                if service.name == "login" {
                    environment["AUTH_ADMIN_PHONE"] = admin.phone
                    environment["AUTH_ADMIN_PASSWORD"] = admin.password
                }
                try FileManager.default.createDirectory(atPath: folder.data + "/\(instance)", withIntermediateDirectories: true)
                services.append(Child(ChildSpec(
                    service: service.name, instance: instance, port: fixed ? plan.gatewayPort : nil, portFile: portFile,
                    executable: plan.binDirectory + "/hailstorm-\(service.name)",
                    arguments: options.sorted { $0.key < $1.key }.flatMap { ["--\($0.key)", $0.value] },
                    environment: environment, log: folder.log(instance), readiness: .http("/readyz"))))
            }
        }
        if let prometheus = plan.prometheus, let port = prometheusPort {
            let setup = PrometheusSetup(run: folder)
            services.append(Child(ChildSpec(
                service: "prometheus", instance: "prometheus", port: port, executable: prometheus.executable,
                arguments: try setup.prepare(port: port, rules: prometheus.rules), log: folder.log("prometheus"),
                readiness: .http("/-/ready"))))
            targets = ScrapeTargets(file: setup.targetsFile)
        } else {
            targets = nil
        }
        self.services = services
        gateway = "http://127.0.0.1:\(plan.gatewayPort)"
        updateTargets()
    }

    /// Tells Prometheus where every instance listens now (etcd and the services; Redis speaks no HTTP).
    private func updateTargets() {
        guard let targets else { return }
        for child in backends + services where child.spec.service != "redis" && child.spec.service != "prometheus" {
            targets.note(job: child.spec.service, instance: child.spec.instance, port: child.port)
        }
        do {
            if try targets.write() { logger.debug("scrape targets written") }
        } catch {
            logger.error("scrape targets not written", metadata: ["error": "\(error)"])
        }
    }

    func run() async throws {
        // The registry holds this run's instances only: registrations a previous run left would come back
        // with renewed leases and send callers to ports nobody listens on.
        if FileManager.default.fileExists(atPath: folder.data + "/etcd") {
            try FileManager.default.removeItem(atPath: folder.data + "/etcd")
        }
        try "\(getpid())".write(toFile: folder.supervisorPIDFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: folder.supervisorPIDFile) }
        for child in backends {
            try child.start()
            logger.info("started", metadata: ["instance": "\(child.spec.instance)", "port": "\(child.port.map(String.init) ?? "reported when bound")"])
        }
        let deadline = ContinuousClock.now + .seconds(20)
        for child in backends {
            while await !Self.isReady(child), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        }
        if redis.shape != nil {
            do {
                try await redis.formCluster(logger: logger)
            } catch {
                logger.error("the Redis Cluster did not form", metadata: ["error": "\(error)"])
                await stop()
                throw error
            }
        }
        for child in services {
            try child.start()
            logger.info("started", metadata: ["instance": "\(child.spec.instance)", "port": "\(child.port.map(String.init) ?? "reported when bound")"])
        }
        var lastProbe = ContinuousClock.now - .seconds(1)
        while !Task.isShuttingDownGracefully {
            let now = ContinuousClock.now
            for child in backends + services {
                if child.isRunning { continue }
                if let restartAt = child.restartAt {
                    guard now >= restartAt else { continue }
                    do {
                        try child.start()
                        child.restarts += 1
                        logger.notice(
                            "restarted", metadata: ["instance": "\(child.spec.instance)", "restarts": "\(child.restarts)"])
                    } catch {
                        logger.error("restart failed", metadata: ["instance": "\(child.spec.instance)", "error": "\(error)"])
                        _ = child.died(now: now)
                    }
                } else {
                    let delay = child.died(now: now)
                    logger.warning(
                        "died; restarting", metadata: [
                            "instance": "\(child.spec.instance)", "exit": "\(child.lastExit ?? "")", "in": "\(delay)",
                        ])
                }
            }
            if now - lastProbe >= .seconds(1) {
                lastProbe = now
                await probe()
                updateTargets()
                writeState(phase: "running")
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        await stop()
    }

    private func probe() async {
        let children = backends + services
        await withTaskGroup(of: (Int, Bool).self) { group in
            for (index, child) in children.enumerated() where child.isRunning {
                child.learnPort()
                guard let port = child.port else { continue }
                let readiness = child.spec.readiness
                group.addTask { (index, await Self.isReady(port: port, readiness)) }
            }
            for await (index, ready) in group {
                let child = children[index]
                let was = child.health
                child.health = ready ? "ready" : (was == "starting" ? "starting" : "unready")
                if was != child.health, child.health == "ready" || was == "ready" {
                    logger.info("health", metadata: ["instance": "\(child.spec.instance)", "health": "\(child.health)"])
                }
            }
        }
    }

    private static func isReady(_ child: Child) async -> Bool {
        child.learnPort()
        guard let port = child.port else { return false }
        return await isReady(port: port, child.spec.readiness)
    }

    private static func isReady(port: Int, _ readiness: ChildSpec.Readiness) async -> Bool {
        switch readiness {
        case .listening:
            return LoopbackPorts.isListening(port)
        case .http(let path):
            do {
                let response = try await HTTPClient.shared.execute(
                    HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .milliseconds(800))
                _ = try await response.body.collect(upTo: 1 << 16)
                return response.status == .ok
            } catch {
                return false
            }
        }
    }

    /// Services first (they drain and deregister), then etcd and Redis.
    private func stop() async {
        writeState(phase: "stopping")
        logger.info("stopping")
        for group in [services, backends] {
            for child in group { child.signal(SIGTERM) }
            let deadline = ContinuousClock.now + .seconds(15)
            while group.contains(where: \.isRunning), ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(100))
            }
            for child in group where child.isRunning {
                logger.warning("did not stop in 15 s; killing", metadata: ["instance": "\(child.spec.instance)"])
                child.signal(SIGKILL)
            }
            for child in group { child.process?.waitUntilExit() }
        }
        for child in backends + services { child.health = "stopped" }
        writeState(phase: "stopped")
        logger.info("stopped")
    }

    private func writeState(phase: String) {
        let state = RunState(
            supervisorPID: getpid(), startedAt: startedAt.timeIntervalSince1970, updatedAt: Date().timeIntervalSince1970,
            gateway: gateway, phase: phase,
            instances: (backends + services).map { child in
                InstanceState(
                    service: child.spec.service, instance: child.spec.instance,
                    pid: child.isRunning ? child.process?.processIdentifier : nil, port: child.isRunning ? child.port : nil, health: child.health,
                    restarts: child.restarts, startedAt: child.isRunning ? child.startedAt?.timeIntervalSince1970 : nil,
                    lastExit: child.lastExit, log: child.spec.log)
            })
        do {
            try folder.write(state, to: folder.stateFile)
        } catch {
            logger.error("state.json not written", metadata: ["error": "\(error)"])
        }
    }

    static func find(_ program: String) throws -> String {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            + ["/usr/sbin", "/usr/bin"]
        {
            let path = "\(directory)/\(program)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw RunnerError("\(program) is not installed (apt-get install redis-server etcd-server)")
    }
}

/// The local run's Redis: one redis-server, or (`--redis-cluster N`) N redis-servers in cluster mode
/// joined by `redis-cli --cluster create` the first time the run folder starts them; a node that dies is
/// started again by the supervisor and rejoins from its `nodes.conf`.
struct RedisPlan: Sendable {
    let ports: [Int]
    let busPorts: [Int]
    let shape: (masters: Int, replicas: Int)?
    let data: String

    /// A cluster keeps its nodes' ports from run to run (each node's `nodes.conf` names its peers by
    /// them), in this file of the data folder; when one is taken by something else, the cluster starts
    /// afresh, empty, on new ports.
    private static let portsFile = "redis-cluster-ports"

    init(nodes: Int?, data: String) throws {
        self.data = data
        shape = nodes.flatMap { RunPlan.clusterShape(nodes: $0) }
        let count = shape.map { $0.masters * ($0.replicas + 1) } ?? 1
        if shape != nil, let kept = try? String(contentsOfFile: data + "/" + Self.portsFile, encoding: .utf8) {
            let numbers = kept.split(whereSeparator: { $0 == "," || $0 == "\n" }).compactMap { Int($0) }
            if numbers.count == count * 2, numbers.allSatisfy({ !LoopbackPorts.isListening($0) }) {
                ports = Array(numbers[..<count])
                busPorts = Array(numbers[count...])
                return
            }
        }
        var taken = Set<Int>()
        var chosen: [Int] = []
        while chosen.count < count * (shape == nil ? 1 : 2) {
            guard let port = LoopbackPorts.free() else { throw RunnerError("no free loopback ports") }
            if taken.insert(port).inserted { chosen.append(port) }
        }
        ports = Array(chosen[..<count])
        busPorts = shape == nil ? [] : Array(chosen[count...])
        guard shape != nil else { return }
        // New ports: the nodes' old cluster state names peers that are not there any more.
        for index in 0..<count { try? FileManager.default.removeItem(atPath: data + "/redis-\(index + 1)") }
        try chosen.map(String.init).joined(separator: ",").write(toFile: data + "/" + Self.portsFile, atomically: true, encoding: .utf8)
    }

    func instance(_ index: Int) -> String { shape == nil ? "redis" : "redis-\(index + 1)" }

    func arguments(_ index: Int) -> [String] {
        var arguments = ["--port", String(ports[index]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--daemonize", "no"]
        if shape == nil { return arguments + ["--dir", data] }
        let directory = data + "/\(instance(index))"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        arguments += [
            "--dir", directory, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", String(busPorts[index]), "--cluster-node-timeout", "2000",
            // A replica's first sync at once rather than after Redis's default 5 s wait for company.
            "--repl-diskless-sync-delay", "0",
        ]
        return arguments
    }

    /// What every service is told of Redis; on a cluster with replicas, coupon answers a claim once a
    /// replica has it.
    func serviceOptions(_ service: String) -> [String: String] {
        var options = ["redis-port": String(ports[0])]
        guard let shape else { return options }
        options["redis-cluster"] = "true"
        options["redis-cluster-nodes"] = ports.dropFirst().map { "127.0.0.1:\($0)" }.joined(separator: ",")
        if service == "coupon", shape.replicas > 0 { options["coupon-redis-wait-replicas"] = String(shape.replicas) }
        return options
    }

    /// Joins the nodes into a cluster unless they already form one, then waits until every node says
    /// `cluster_state:ok` with every slot served.
    func formCluster(logger: Logger) async throws {
        guard let shape else { return }
        let cli = try Supervisor.find("redis-cli")
        let info = try Self.run(cli, ["-p", String(ports[0]), "CLUSTER", "INFO"])
        if info.contains("cluster_slots_assigned:0") {
            logger.info("forming the Redis Cluster", metadata: ["masters": "\(shape.masters)", "replicas": "\(shape.replicas)"])
            _ = try Self.run(
                cli, ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", String(shape.replicas), "--cluster-yes"])
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let states = ports.map { (try? Self.run(cli, ["-p", String($0), "CLUSTER", "INFO"])) ?? "" }
            if states.allSatisfy({ $0.contains("cluster_state:ok") && $0.contains("cluster_slots_ok:16384") }) {
                logger.info("the Redis Cluster serves every slot", metadata: ["nodes": "\(ports.count)"])
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw RunnerError("the Redis Cluster did not reach cluster_state:ok within 60 s (`hailstorm logs redis` shows why)")
    }

    /// A redis-cli call's output; a failing one throws with it.
    private static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw RunnerError("redis-cli \(arguments.joined(separator: " ")): \(text)") }
        return text
    }
}

/// The services of a local run, in the order they start.
enum ServiceCatalog {
    struct Entry: Sendable {
        var name: String
        /// Keeps nothing of its own (no SQLite file), so several instances may run side by side.
        var stateless: Bool
        /// Keeps a SQLite file but splits its data into shards (`Shards`): instance n owns shard n − 1, each
        /// with its own file, so `--replicas` gives it that many shards.
        var sharded = false
    }

    static let all: [Entry] = [
        Entry(name: "login", stateless: false),
        Entry(name: "order", stateless: false, sharded: true),
        Entry(name: "matching", stateless: false, sharded: true),
        Entry(name: "order-grab", stateless: false),
        Entry(name: "coupon", stateless: false, sharded: true),
        Entry(name: "payment", stateless: false, sharded: true),
        Entry(name: "settlement", stateless: false),
        Entry(name: "ad", stateless: false, sharded: true),
        Entry(name: "analytics", stateless: false),
        Entry(name: "command", stateless: false),
        Entry(name: "gateway", stateless: true),
    ]
}

struct RunnerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
