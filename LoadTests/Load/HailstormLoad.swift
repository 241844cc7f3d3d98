import ArgumentParser
import BenchSupport
import AsyncHTTPClient
import Contracts
import Foundation
import HailKit
import Histogram
import RedisKit

/// `hailstorm-load SCENARIO --rate R --duration S --out DIR`: drives a running Hailstorm (started by
/// `hailstorm up`) through its gateway with an open-loop arrival schedule, records latencies per endpoint
/// in HdrHistograms, audits the system's own state afterwards and writes `report.json` and `report.html`.
/// Exits 1 when the audit fails.
@main
struct HailstormLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hailstorm-load",
        abstract: "Open-loop load against a running Hailstorm, with an audit of correctness and a report.")

    enum ScenarioName: String, ExpressibleByArgument, CaseIterable {
        case flashSale = "flash-sale", rushHour = "rush-hour", grabStorm = "grab-storm", adStorm = "ad-storm", mixed, chaos, bareHTTP = "bare-http"
    }

    @Argument(help: "flash-sale, rush-hour, grab-storm, ad-storm (riders asking for ads and counting them), mixed, chaos (mixed while Redis, etcd and every service are SIGKILLed in turn), or bare-http (the reference: --target a hailstorm-bare-endpoint).")
    var scenario: ScenarioName

    @Option(help: "Offered requests per second (the schedule's rate; see --profile).")
    var rate: Double = 100

    @Option(help: "Seconds of scheduled load.")
    var duration: Double = 10

    @Option(help: "Folder for report.json and report.html.")
    var out: String = "load-report"

    @Option(help: "constant, ramp (0 → rate), step (4 steps up to rate) or burst (3 × rate in the first second).")
    var profile: String = "constant"

    @Option(help: "The run folder of `hailstorm up` (gateway, Redis, the signing key, the admin).")
    var runDir: String = ".hailstorm/run"

    @Option(help: "flash-sale: coupons in the campaign.")
    var coupons: Int = 1000

    @Option(help: "flash-sale: riders pressing the button; ad-storm: riders asking for ads.")
    var riders: Int = 5000

    @Option(help: "flash-sale: seconds between the campaign's announcement and its opening, in which every rider opens its page once (through the gateway, not measured), as riders waiting for a sale do. 0: the sale opens as the run starts, to riders the platform has not seen yet.")
    var waitingRoom: Double = 0

    @Option(help: "rush-hour / grab-storm: simulated drivers (rush-hour 1000, grab-storm 100 when not given).")
    var drivers: Int?

    @Option(help: "rush-hour: assign, offer or both (alternating).")
    var dispatch: String = "both"

    @Option(help: "rush-hour / grab-storm: seconds between a driver's location fixes.")
    var fixSeconds: Double = 10

    @Option(help: "bare-http: the base URL of a running hailstorm-bare-endpoint.")
    var target: String?

    @Flag(help: "flash-sale: after the run, redis-benchmark runs the claim's Lua script on the same Redis; the report gives the ratio.")
    var reference = false

    @Option(help: "HTTP connections to the gateway.")
    var connections: Int = 256

    @Option(help: "Connections to the gateway opened before the run's clock starts (up to --connections), as wrk opens its own; 0: opened as requests need them, within the run.")
    var openAhead: Int = 0

    @Option(help: "Requests in flight at most (scheduled and the drivers' own); a due request beyond it is counted as dropped.")
    var maxInFlight: Int = 2048

    func validate() throws {
        guard rate > 0, rate <= 200_000, duration > 0, duration <= 3600 else {
            throw ValidationError("--rate must be in (0, 200000] and --duration in (0, 3600]")
        }
        guard ArrivalSchedule.Profile(rawValue: profile) != nil else {
            throw ValidationError("--profile must be one of \(ArrivalSchedule.Profile.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard ["assign", "offer", "both"].contains(dispatch) else { throw ValidationError("--dispatch must be assign, offer or both") }
        guard coupons > 0, riders > 0, (drivers ?? 1) > 0, fixSeconds > 0, connections > 0, maxInFlight > 0, openAhead >= 0 else {
            throw ValidationError("counts must be positive")
        }
        guard waitingRoom >= 0, waitingRoom <= 600 else { throw ValidationError("--waiting-room must be in [0, 600] seconds") }
    }

    func run() async throws {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        // No tracing span per request (the client would parse every URL again to name it): the generator's
        // own cost is taken from the two cores the system under test runs on, in every scenario alike.
        configuration.tracing.tracer = nil
        if scenario == .bareHTTP {
            guard let target else { throw ValidationError("bare-http needs --target http://127.0.0.1:PORT") }
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            // The bare endpoint checks no token; a throwaway key signs the ones the scenario sends.
            let throwaway = try TokenKeys.generate(issuers: [AccessTokens.userIssuer])
            let tokens = try await AccessTokens(
                service: "hailstorm-load", signingKey: throwaway.privateKeys[AccessTokens.userIssuer], jwks: throwaway.jwks)
            let context = LoadContext(
                gateway: target, client: client, lane: GatewayLane(url: target, connections: connections), tokens: tokens, admin: "",
                redis: nil, runLabel: "bare", recorder: LatencyRecorder(), maxInFlight: maxInFlight)
            let passed: Bool
            do {
                passed = try await measure(BareHTTPScenario(context: context), context: context, redisPort: nil)
            } catch {
                try? await client.shutdown()
                throw error
            }
            try await client.shutdown()
            if !passed { throw ExitCode(1) }
            return
        }
        let folder = URL(fileURLWithPath: runDir).standardizedFileURL.path
        guard let stateData = FileManager.default.contents(atPath: folder + "/state.json"),
            let state = try JSONSerialization.jsonObject(with: stateData) as? [String: Any], state["phase"] as? String == "running",
            let gateway = state["gateway"] as? String,
            let redisPort = ((state["instances"] as? [[String: Any]]) ?? []).first(where: { $0["service"] as? String == "redis" })?["port"] as? Int
        else { throw LoadError("no running Hailstorm in \(folder): start it with `hailstorm up`") }
        // The generator signs its riders' and drivers' tokens with the run's login key, as `hailstorm token`
        // does: signing up 100,000 riders would measure sign-up, not the sale.
        let keys = folder + "/keys"
        guard let loginKey = try? String(contentsOfFile: keys + "/login.key", encoding: .utf8),
            let jwks = try? String(contentsOfFile: keys + "/jwks.json", encoding: .utf8)
        else { throw LoadError("no token keys in \(keys): start Hailstorm with `hailstorm up`") }
        let tokens = try await AccessTokens(service: "hailstorm-load", signingKey: loginKey, jwks: jwks)
        guard let adminData = FileManager.default.contents(atPath: folder + "/admin.json"),
            let admin = try JSONSerialization.jsonObject(with: adminData) as? [String: String]
        else { throw LoadError("no admin.json in \(folder)") }

        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let redis = RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: redisPort, poolSize: 2))
        do {
            let passed = try await execute(
                gateway: gateway, tokens: tokens, admin: admin, client: client, redis: redis, redisPort: redisPort, runFolder: folder)
            try await client.shutdown()
            await redis.shutdown()
            if !passed { throw ExitCode(1) }
        } catch {
            try? await client.shutdown()
            await redis.shutdown()
            throw error
        }
    }

    private func execute(
        gateway: String, tokens: AccessTokens, admin: [String: String], client: HTTPClient, redis: RedisClient, redisPort: Int,
        runFolder: String
    ) async throws -> Bool {
        let recorder = LatencyRecorder()
        let label = String(UUID().uuidString.prefix(8)).lowercased()
        let signIn = try await Self.signIn(gateway: gateway, client: client, phone: admin["phone"] ?? "", password: admin["password"] ?? "")
        let context = LoadContext(
            gateway: gateway, client: client, lane: GatewayLane(url: gateway, connections: connections), tokens: tokens,
            admin: signIn, redis: redis,
            runLabel: label, recorder: recorder, maxInFlight: maxInFlight)
        let modes: [OrderAPI.Dispatch] = dispatch == "both" ? [.assign, .offer] : [OrderAPI.Dispatch(rawValue: dispatch)!]
        func flashSale() -> any Scenario { FlashSaleScenario(context: context, coupons: coupons, riders: riders, waitingRoom: waitingRoom) }
        func rushHour() -> any Scenario {
            RideScenario(name: "rush-hour", context: context, drivers: drivers ?? 1000, spread: 0.06, pickupSpread: 0.05, dispatch: modes, fixSeconds: fixSeconds)
        }
        func grabStorm() -> any Scenario {
            RideScenario(name: "grab-storm", context: context, drivers: drivers ?? 100, spread: 0.002, pickupSpread: 0.001, dispatch: [.offer], fixSeconds: fixSeconds)
        }
        let chosen: any Scenario = switch scenario {
        case .flashSale: flashSale()
        case .rushHour: rushHour()
        case .grabStorm: grabStorm()
        case .adStorm: AdStormScenario(context: context, riders: riders)
        case .mixed: MixedScenario([flashSale(), rushHour(), grabStorm()])
        case .chaos: ChaosScenario(MixedScenario([flashSale(), rushHour(), grabStorm()]), context: context, runDir: runFolder, duration: duration)
        case .bareHTTP: throw ValidationError("bare-http runs without a Hailstorm")
        }
        return try await measure(chosen, context: context, redisPort: redisPort)
    }

    private func measure(_ chosen: any Scenario, context: LoadContext, redisPort: Int?) async throws -> Bool {
        let recorder = context.recorder
        let gateway = context.gateway
        FileHandle.standardError.write(Data("hailstorm-load \(scenario.rawValue): preparing…\n".utf8))
        try await chosen.prepare()
        if openAhead > 0 { await context.lane?.openAhead(openAhead) }
        let schedule = ArrivalSchedule(profile: ArrivalSchedule.Profile(rawValue: profile)!, rate: rate, duration: duration)
        let startedAt = Date()
        let started = ContinuousClock.now
        let progress = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                if Task.isCancelled { break }
                let t = Int((ContinuousClock.now - started).secondsValue)
                FileHandle.standardError.write(Data(
                    "\r\(t)s: \(recorder.completed) answered, \(recorder.errorCount) errors, due rate now \(Int(schedule.rate(at: Double(t))))/s   ".utf8))
            }
        }
        let totals = await OpenLoop(schedule: schedule, maxInFlight: maxInFlight, recorder: recorder)
            .run(submit: { index, loop, done in
                chosen.submit(index, second: Int((ContinuousClock.now - started).secondsValue), on: loop, done)
            }) { index in
                await chosen.request(index, second: Int((ContinuousClock.now - started).secondsValue))
            }
        progress.cancel()
        FileHandle.standardError.write(Data("\nauditing…\n".utf8))
        await chosen.finish()
        let audit = try await chosen.audit()
        let snapshot = recorder.snapshot()
        let measured = Report(
            scenario: scenario.rawValue, profile: profile, offeredRate: rate, durationSeconds: duration,
            startedAt: startedAt.ISO8601Format(), gateway: gateway, due: totals.due, sent: totals.sent, dropped: totals.dropped,
            late: snapshot.late, completed: recorder.completed, achievedRate: Double(totals.sent) / max(totals.elapsed, duration),
            outcomes: snapshot.outcomes, errors: snapshot.errors,
            endpoints: snapshot.endpoints.sorted { $0.key < $1.key }.map { Report.endpoint($0.key, $0.value) },
            timeline: snapshot.seconds.sorted { $0.key < $1.key }.map { second, bucket in
                Report.Second(
                    second: second, count: bucket.count, errors: bucket.errors,
                    p50Ms: Double(bucket.histogram.valueAtPercentile(50)) / 1000, p99Ms: Double(bucket.histogram.valueAtPercentile(99)) / 1000)
            },
            audit: audit, figures: chosen.figures(), reference: nil, passed: audit.allSatisfy(\.passed))
        var final = measured
        if reference, let redis = context.redis, let redisPort {
            FileHandle.standardError.write(Data("reference: redis-benchmark with the claim's Lua script…\n".utf8))
            let connections = min(self.connections, 1000)
            let figures = try await RedisBenchmarkReference(port: redisPort, connections: connections, requests: max(100_000, totals.sent))
                .run(redis: redis, label: context.runLabel)
            final.reference = Report.Reference(
                redisBenchmarkLuaRate: figures.rate, redisBenchmarkLuaP50Ms: figures.p50Ms, redisBenchmarkLuaP99Ms: figures.p99Ms,
                connections: connections, ratio: figures.rate > 0 ? measured.achievedRate / figures.rate : 0)
        }
        let report = final
        try report.write(to: out)
        print(summary(report))
        return report.passed
    }

    private func summary(_ report: Report) -> String {
        var lines = ["\(report.scenario) (\(report.profile), offered \(Int(report.offeredRate))/s for \(Int(report.durationSeconds)) s): "
            + "sent \(report.sent), dropped \(report.dropped), late \(report.late), achieved \(Int(report.achievedRate))/s, errors \(report.errors.values.reduce(0, +))"]
        for endpoint in report.endpoints {
            let l = endpoint.latencyMs
            lines.append(String(
                format: "  %@  n=%d  p50 %.1f ms  p99 %.1f ms  p99.9 %.1f ms  max %.1f ms", endpoint.name, endpoint.count,
                l["p50"] ?? 0, l["p99"] ?? 0, l["p99.9"] ?? 0, l["max"] ?? 0))
        }
        for (name, values) in report.figures.sorted(by: { $0.key < $1.key }) {
            lines.append(String(format: "  %@  p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f", name, values["p50"] ?? 0, values["p99"] ?? 0, values["p99.9"] ?? 0, values["max"] ?? 0))
        }
        if let r = report.reference {
            lines.append(String(
                format: "  reference: redis-benchmark Lua %.0f/s (p50 %.2f ms, p99 %.2f ms); this run achieved %.3f of it",
                r.redisBenchmarkLuaRate, r.redisBenchmarkLuaP50Ms, r.redisBenchmarkLuaP99Ms, r.ratio))
        }
        for check in report.audit { lines.append("  [\(check.passed ? "PASS" : "FAIL")] \(check.name): \(check.detail)") }
        lines.append("audit \(report.passed ? "passed" : "FAILED"); report in \(out)/report.json and \(out)/report.html")
        return lines.joined(separator: "\n")
    }

    static func signIn(gateway: String, client: HTTPClient, phone: String, password: String) async throws -> String {
        var request = HTTPClientRequest(url: gateway + "/api/v1/auth/login")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(.init(data: try JSONSerialization.data(withJSONObject: ["phone": phone, "password": password])))
        let response = try await client.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1 << 20)
        guard response.status == .ok, let token = (try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any])?["accessToken"] as? String else {
            throw LoadError("the admin could not sign in: \(response.status)")
        }
        return token
    }
}
