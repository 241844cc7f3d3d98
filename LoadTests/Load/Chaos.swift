import Foundation
import Synchronization

/// `chaos`: the mixed load (flash sale, rush hour, grab storm) while, one after another, redis-server,
/// etcd and every service instance of the run are killed with SIGKILL — a crash, no goodbye. The local
/// supervisor starts each again; the next victim dies only once the previous one is ready again. The
/// audits afterwards are the mixed scenario's (nothing lost, nothing doubled), plus: every victim came
/// back. The report counts the 503 answers and gives each outage's length (kill → ready again).
final class ChaosScenario: Scenario {
    let name = "chaos"
    let inner: MixedScenario
    let context: LoadContext
    let stateFile: String
    let duration: Double

    struct Outage: Sendable {
        var instance: String
        var seconds: Double?
    }

    private let injector = Mutex<Task<[Outage], Never>?>(nil)

    init(_ inner: MixedScenario, context: LoadContext, runDir: String, duration: Double) {
        self.inner = inner
        self.context = context
        self.stateFile = runDir + "/state.json"
        self.duration = duration
    }

    func prepare() async throws {
        guard !Self.instances(stateFile).isEmpty else { throw LoadError("no instances in \(stateFile)") }
        try await inner.prepare()
    }

    func request(_ index: Int, second: Int) async -> (endpoint: String, outcome: Outcome) {
        if index == 0 { startInjector() }
        return await inner.request(index, second: second)
    }

    private func startInjector() {
        let stateFile = self.stateFile
        let duration = self.duration
        injector.withLock { task in
            guard task == nil else { return }
            task = Task {
                let victims = Self.instances(stateFile).map(\.instance)
                // Spread over the run, leaving its last stretch for the system to settle under load.
                let spacing = Duration.milliseconds(Int(duration * 1000 / Double(victims.count + 1)))
                let started = ContinuousClock.now
                var outages: [Outage] = []
                for (position, victim) in victims.enumerated() {
                    let due = started + spacing * (position + 1)
                    if due > .now { try? await Task.sleep(until: due) }
                    outages.append(await Self.kill(victim, stateFile: stateFile))
                }
                return outages
            }
        }
    }

    /// SIGKILLs `instance` and waits (up to 120 s) until the supervisor reports a new process ready.
    static func kill(_ instance: String, stateFile: String) async -> Outage {
        guard let before = instances(stateFile).first(where: { $0.instance == instance }), let pid = before.pid else {
            return Outage(instance: instance, seconds: nil)
        }
        let killed = ContinuousClock.now
        Foundation.kill(pid, SIGKILL)
        FileHandle.standardError.write(Data("\nchaos: killed \(instance) (pid \(pid))\n".utf8))
        let deadline = killed + .seconds(120)
        while ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
            if let now = instances(stateFile).first(where: { $0.instance == instance }), let newPID = now.pid, newPID != pid,
                now.health == "ready"
            {
                let seconds = (ContinuousClock.now - killed).secondsValue
                FileHandle.standardError.write(Data("chaos: \(instance) ready again after \(String(format: "%.1f", seconds)) s\n".utf8))
                return Outage(instance: instance, seconds: seconds)
            }
        }
        return Outage(instance: instance, seconds: nil)
    }

    struct Instance {
        var instance: String
        var pid: Int32?
        var health: String
    }

    /// The run's instances in the supervisor's order (Redis, etcd, then the services), from `state.json`.
    static func instances(_ stateFile: String) -> [Instance] {
        guard let data = FileManager.default.contents(atPath: stateFile),
            let state = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let instances = state["instances"] as? [[String: Any]]
        else { return [] }
        return instances.compactMap { entry in
            guard let name = entry["instance"] as? String else { return nil }
            return Instance(instance: name, pid: (entry["pid"] as? Int).map(Int32.init), health: entry["health"] as? String ?? "")
        }
    }

    func finish() async {
        let task = injector.withLock { $0 }
        _ = await task?.value
        await inner.finish()
    }

    func audit() async throws -> [AuditCheck] {
        let task = injector.withLock { $0 }
        let outages = await task?.value ?? []
        let back = outages.filter { $0.seconds != nil }
        let lines = outages.map { outage in
            "\(outage.instance) " + (outage.seconds.map { String(format: "%.1f s", $0) } ?? "not back")
        }
        let errors = context.recorder.snapshot().errors
        let unavailable = errors.filter { $0.key.hasPrefix("503") }.values.reduce(0, +)
        let otherErrors = errors.filter { !$0.key.hasPrefix("503") }.values.reduce(0, +)
        return [
            AuditCheck(
                name: "every killed process came back ready", passed: !outages.isEmpty && back.count == outages.count,
                detail: lines.joined(separator: ", ")),
            AuditCheck(
                name: "answers during the outages (informational)", passed: true,
                detail: "\(unavailable) answered 503, \(otherErrors) other errors"),
        ] + (try await inner.audit())
    }

    func figures() -> [String: [String: Double]] { inner.figures() }
}
