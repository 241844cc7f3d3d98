import ArgumentParser
import Foundation
import HailKit
import Logging
import ServiceLifecycle

/// `hailstorm`: runs Hailstorm on this machine — Redis, etcd and every service as its own process, kept
/// alive by a supervisor — and a simulated city against it.
@main
struct Hailstorm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hailstorm",
        abstract: "Run Hailstorm locally: every service as its own process, kept alive, with a demo city.",
        subcommands: [Up.self, Status.self, Down.self, Logs.self, Demo.self, Keys.self, Token.self, Supervise.self])
}

struct RunFolderOption: ParsableArguments {
    @Option(help: "The run folder: logs, data, state, the admin's credentials.")
    var runDir: String = ".hailstorm/run"

    var folder: RunFolder { RunFolder(runDir) }
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start Redis, etcd and every service; return once all are ready, leaving a supervisor running.")

    @OptionGroup var run: RunFolderOption

    @Option(help: "The gateway's port on 127.0.0.1.")
    var gatewayPort: Int = 8080

    @Option(name: .customLong("replicas"), help: "Instances of a stateless service, or shards of a sharded one, as NAME=N (gateway=2, order=3), or several separated by commas (order=3,coupon=2). Repeatable.")
    var replicas: [String] = []

    @Option(name: .customLong("option"), help: "A service option, as SERVICE:KEY=VALUE (matching:matching-window-ms=1000). Repeatable.")
    var options: [String] = []

    @Option(help: "The folder holding the hailstorm-* executables (default: beside this one).")
    var binDir: String?

    @Flag(help: "Stay attached: supervise in this process until Ctrl-C.")
    var foreground = false

    @Flag(help: "Run without Prometheus (by default it scrapes every instance every 5 s and evaluates Hailstorm's rules).")
    var noPrometheus = false

    @Option(help: "Prometheus's recording and alert rules (default: \(PrometheusPlan.rulesInCheckout) of the checkout the binaries were built in).")
    var prometheusRules: String?

    @Option(help: "Seconds to wait for every instance to be ready.")
    var timeout: Int = 180

    @Option(help: "Run Redis as a Redis Cluster of N nodes on loopback: 3 (three masters) or an even N from 6 to 16 (half masters, each with a replica that takes over when it dies).")
    var redisCluster: Int?

    func run() async throws {
        let folder = run.folder
        try folder.prepare()
        if let pid = folder.runningSupervisor {
            print("Hailstorm is already running (supervisor pid \(pid)); `hailstorm status --run-dir \(run.runDir)` shows it.")
            return
        }
        let plan = try makePlan()
        try folder.write(plan, to: folder.planFile)
        if foreground {
            try await Supervise.supervise(folder: folder, plan: plan)
            return
        }
        try? FileManager.default.removeItem(atPath: folder.stateFile)
        let log = folder.log("supervisor")
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        let process = Process()
        // Its own session: closing this terminal does not stop Hailstorm; `hailstorm down` does.
        process.executableURL = URL(fileURLWithPath: try Supervisor.find("setsid"))
        process.arguments = [Self.executablePath, "supervise", "--run-dir", folder.path]
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        print("Starting Hailstorm (run folder \(folder.path), supervisor log \(log))")

        let deadline = ContinuousClock.now + .seconds(timeout)
        var last: RunState?
        while ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(500))
            if let state = try? folder.read(RunState.self, from: folder.stateFile) {
                last = state
                let ready = state.instances.filter { $0.health == "ready" }.count
                FileHandle.standardError.write(Data("\r\(ready)/\(state.instances.count) ready".utf8))
                if ready == state.instances.count { break }
            }
            // `setsid` runs the supervisor in its place (or forks it and exits 0): a non-zero exit is a failure.
            if !process.isRunning, process.terminationStatus != 0 || folder.runningSupervisor == nil && last != nil {
                throw RunnerError("the supervisor stopped; see \(log):\n" + Logs.tail(log, lines: 30))
            }
        }
        FileHandle.standardError.write(Data("\n".utf8))
        guard let state = last, state.instances.allSatisfy({ $0.health == "ready" }) else {
            let waiting = last?.instances.filter { $0.health != "ready" }.map(\.instance).joined(separator: ", ") ?? "everything"
            throw RunnerError("not ready after \(timeout) s: \(waiting); `hailstorm logs NAME` shows why")
        }
        Status.printTable(state)
        let prometheus = state.instances.first { $0.service == "prometheus" }.flatMap(\.port).map {
            "http://127.0.0.1:\($0)  (every instance scraped every 5 s; targets at /targets, alerts at /alerts)"
        } ?? (plan.prometheus == nil ? "not running (\(noPrometheus ? "--no-prometheus" : "not installed: apt-get install prometheus"))" : "not ready")
        print("""

            Gateway:    \(state.gateway)  (API under /api/v1, metrics at /metrics)
            Prometheus: \(prometheus)
            Analytics:  \(state.gateway)/api/v1/admin/analytics/kpis (admin; KPIs, funnel, heatmap, trip paths)
            Command:    \(state.gateway)/command/ (admin; the city, the last hour, the service board, alerts, levers, audit log)
            Admin:      \(folder.adminFile) (phone and password of the admin account)
            Next:       hailstorm demo · hailstorm status · hailstorm logs NAME · hailstorm down
            """)
    }

    /// Prometheus when it is installed and not turned off; says so when it runs without rules.
    func prometheusPlan(bin: String) throws -> PrometheusPlan? {
        guard !noPrometheus else { return nil }
        guard let executable = try? Supervisor.find("prometheus") else {
            print("Prometheus is not installed (apt-get install prometheus): running without it.")
            return nil
        }
        if let prometheusRules {
            guard FileManager.default.isReadableFile(atPath: prometheusRules) else {
                throw ValidationError("--prometheus-rules: cannot read \(prometheusRules)")
            }
            let rules = URL(fileURLWithPath: prometheusRules).standardizedFileURL.path
            try Self.checkRules(rules)
            return PrometheusPlan(executable: executable, rules: rules)
        }
        let rules = PrometheusPlan.findRules(from: bin)
        if rules == nil { print("No \(PrometheusPlan.rulesInCheckout) above \(bin): Prometheus runs without Hailstorm's rules.") }
        return PrometheusPlan(executable: executable, rules: rules)
    }

    /// Refuses a rules file Prometheus would not load (it would restart for ever and `up` wait its whole
    /// timeout): `promtool check rules`, from the same package, says why.
    static func checkRules(_ file: String) throws {
        guard let promtool = try? Supervisor.find("promtool") else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: promtool)
        process.arguments = ["check", "rules", file]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("--prometheus-rules: Prometheus cannot load \(file):\n\(text.suffix(2000))")
        }
    }

    func makePlan() throws -> RunPlan {
        var counts: [String: Int] = [:]
        // Repeated (`--replicas order=3 --replicas coupon=2`) or listed (`--replicas order=3,coupon=2`).
        for entry in replicas.flatMap({ $0.split(separator: ",").map(String.init) }) {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let count = Int(parts[1]), (1...16).contains(count) else {
                throw ValidationError("--replicas takes NAME=N with N from 1 to 16, not \(entry)")
            }
            guard let service = ServiceCatalog.all.first(where: { $0.name == parts[0] }) else {
                throw ValidationError("no service \(parts[0]); the services are \(ServiceCatalog.all.map(\.name).joined(separator: ", "))")
            }
            guard service.stateless || service.sharded || count == 1 else {
                throw ValidationError(
                    "\(service.name) keeps a SQLite file (one writer per file), so it runs one instance; --replicas takes the stateless services ("
                        + ServiceCatalog.all.filter(\.stateless).map(\.name).joined(separator: ", ") + ") and the sharded ones ("
                        + ServiceCatalog.all.filter(\.sharded).map(\.name).joined(separator: ", ") + ")")
            }
            counts[service.name] = count
        }
        var serviceOptions: [String: [String: String]] = [:]
        for entry in options {
            guard let colon = entry.firstIndex(of: ":"), let equals = entry[colon...].firstIndex(of: "=") else {
                throw ValidationError("--option takes SERVICE:KEY=VALUE, not \(entry)")
            }
            let service = String(entry[..<colon])
            guard ServiceCatalog.all.contains(where: { $0.name == service }) else { throw ValidationError("no service \(service)") }
            serviceOptions[service, default: [:]][String(entry[entry.index(after: colon)..<equals])] = String(entry[entry.index(after: equals)...])
        }
        let bin = binDir ?? URL(fileURLWithPath: Self.executablePath).deletingLastPathComponent().path
        for service in ServiceCatalog.all where !FileManager.default.isExecutableFile(atPath: bin + "/hailstorm-\(service.name)") {
            throw ValidationError("\(bin)/hailstorm-\(service.name) is missing: build the services first (swift build -c release)")
        }
        guard (1...65535).contains(gatewayPort) else { throw ValidationError("--gateway-port must be a TCP port") }
        if LoopbackPorts.isListening(gatewayPort) {
            throw ValidationError("something already listens on 127.0.0.1:\(gatewayPort); choose another with --gateway-port")
        }
        if let redisCluster, RunPlan.clusterShape(nodes: redisCluster) == nil {
            throw ValidationError("--redis-cluster takes 3 (three masters) or an even number from 6 to 16 (half masters, each with a replica), not \(redisCluster)")
        }
        return RunPlan(
            binDirectory: bin, gatewayPort: gatewayPort, replicas: counts, options: serviceOptions, prometheus: try prometheusPlan(bin: bin),
            redisCluster: redisCluster)
    }

    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// The supervisor itself (what `up` leaves running); not for direct use.
struct Supervise: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Supervise a run (started by `up`).", shouldDisplay: false)

    @OptionGroup var run: RunFolderOption

    func run() async throws {
        let folder = run.folder
        try await Self.supervise(folder: folder, plan: try folder.read(RunPlan.self, from: folder.planFile))
    }

    static func supervise(folder: RunFolder, plan: RunPlan) async throws {
        var logger = Logger(label: "hailstorm.supervisor")
        logger.logLevel = .info
        let supervisor = try Supervisor(folder: folder, plan: plan, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: supervisor)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Each instance's health, port, pid, restarts and uptime.")

    @OptionGroup var run: RunFolderOption

    @Flag(help: "Print the state as JSON.")
    var json = false

    func run() async throws {
        let folder = run.folder
        guard folder.runningSupervisor != nil, let state = try? folder.read(RunState.self, from: folder.stateFile) else {
            if json {
                print(#"{"phase":"stopped","instances":[]}"#)
            } else {
                print("Hailstorm is not running (run folder \(folder.path)); `hailstorm up` starts it.")
            }
            throw ExitCode(3)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(state), as: UTF8.self))
        } else {
            Self.printTable(state)
        }
    }

    static func printTable(_ state: RunState) {
        let now = Date().timeIntervalSince1970
        let rows = [["INSTANCE", "HEALTH", "PORT", "PID", "RESTARTS", "UPTIME"]] + state.instances.map { instance in
            [
                instance.instance, instance.health, instance.port.map(String.init) ?? "-", instance.pid.map(String.init) ?? "-",
                String(instance.restarts), instance.startedAt.map { duration(now - $0) } ?? "-",
            ]
        }
        let widths = (0..<6).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            print(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds)
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }
}

struct Down: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop every service gracefully, then Redis and etcd.")

    @OptionGroup var run: RunFolderOption

    func run() async throws {
        let folder = run.folder
        guard let pid = folder.runningSupervisor else {
            print("Hailstorm is not running (run folder \(folder.path)).")
            return
        }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(60)
        while kill(pid, 0) == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(200)) }
        guard kill(pid, 0) != 0 else { throw RunnerError("the supervisor (pid \(pid)) did not stop within 60 s") }
        print("Hailstorm stopped.")
    }
}

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The log of a service (every instance), redis, etcd or the supervisor; or one request's lines from every service.")

    @OptionGroup var run: RunFolderOption

    @Argument(help: "A service (gateway), an instance (gateway-2), redis, etcd or supervisor.")
    var name: String?

    @Option(name: .shortAndLong, help: "Lines from the end of each log.")
    var lines: Int = 100

    @Option(help: "A request id (X-Request-ID) or a W3C trace id: its lines from every service's log, in time order.")
    var trace: String?

    func validate() throws {
        if let trace, trace.isEmpty || trace.count > 200 { throw ValidationError("--trace takes an id of 1 to 200 characters") }
        if trace == nil, name == nil { throw ValidationError("name a service, an instance, redis, etcd or supervisor (or give --trace ID)") }
    }

    func run() async throws {
        let folder = run.folder
        if let trace {
            let found = Self.traced(trace, in: folder.logs)
            guard !found.isEmpty else { throw ValidationError("no line of any service's log in \(folder.logs) carries \(trace)") }
            for line in found { print(line) }
            return
        }
        let name = name ?? ""
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder.logs)) ?? []).filter { file in
            file == "\(name).log" || (file.hasPrefix("\(name)-") && file.dropFirst(name.count + 1).dropLast(4).allSatisfy(\.isNumber))
        }.sorted()
        guard !files.isEmpty else { throw ValidationError("no log for \(name) in \(folder.logs)") }
        for file in files {
            if files.count > 1 { print("==> \(file) <==") }
            print(Self.tail(folder.logs + "/" + file, lines: lines), terminator: "")
        }
    }

    /// The fields a service's JSON log line names its request and trace by.
    static let traceFields = ["request_id", "trace_id", "hb.request.id"]

    /// Every JSON line of the folder's logs whose request id or trace id is `id`, oldest first, as
    /// `time  instance  level  message  field=value…`.
    static func traced(_ id: String, in folder: String) -> [String] {
        var found: [(time: String, text: String)] = []
        for file in ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted() where file.hasSuffix(".log") {
            guard let text = try? String(contentsOfFile: folder + "/" + file, encoding: .utf8), text.contains(id) else { continue }
            for line in text.split(separator: "\n") where line.contains(id) {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    traceFields.contains(where: { object[$0] as? String == id })
                else { continue }
                let time = object["ts"] as? String ?? ""
                let shown: Set = ["ts", "instance", "level", "msg", "service", "logger"]
                let rest = object.keys.filter { !shown.contains($0) }.sorted().map { "\($0)=\(object[$0].map { "\($0)" } ?? "")" }
                let instance = object["instance"] as? String ?? String(file.dropLast(4))
                found.append((time, ([time, instance, object["level"] as? String ?? "", object["msg"] as? String ?? ""] + rest).joined(separator: "  ")))
            }
        }
        return found.sorted { $0.time < $1.time }.map(\.text)
    }

    static func tail(_ path: String, lines: Int) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "" }
        let all = text.split(separator: "\n", omittingEmptySubsequences: false)
        return all.suffix(lines + 1).joined(separator: "\n")
    }
}
