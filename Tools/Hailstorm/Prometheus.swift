import Foundation

/// Prometheus in a local run: which executable, and the rules it evaluates (none when not found).
struct PrometheusPlan: Codable, Sendable {
    var executable: String
    /// Recording and alert rules (`k8s/components/prometheus/hailstorm-rules.yml` in a checkout).
    var rules: String?

    /// Where the rules are in the checkout that holds `binDirectory` (`.build/…/release`), if anywhere.
    static func findRules(from binDirectory: String) -> String? {
        var folder = URL(fileURLWithPath: binDirectory).standardizedFileURL
        for _ in 0..<6 {
            let candidate = folder.appendingPathComponent(Self.rulesInCheckout).path
            if FileManager.default.isReadableFile(atPath: candidate) { return candidate }
            folder.deleteLastPathComponent()
        }
        return nil
    }

    static let rulesInCheckout = "k8s/components/prometheus/hailstorm-rules.yml"
}

/// The files Prometheus reads in a local run, under `RUN/prometheus/`: its configuration (JSON, which
/// YAML includes), a copy of the rules, and `targets.json`, the file-based discovery the supervisor
/// rewrites whenever an instance's port changes (Prometheus watches the file).
struct PrometheusSetup {
    let folder: String
    /// Seconds between scrapes and between rule evaluations.
    var interval = 5

    var configFile: String { folder + "/prometheus.yml" }
    var targetsFile: String { folder + "/targets.json" }
    var rulesFile: String { folder + "/hailstorm-rules.yml" }
    var dataFolder: String { folder + "/data" }

    init(run: RunFolder) {
        folder = run.path + "/prometheus"
    }

    /// Writes the configuration (and copies the rules), returning the arguments to start Prometheus with.
    func prepare(port: Int, rules: String?) throws -> [String] {
        try FileManager.default.createDirectory(atPath: dataFolder, withIntermediateDirectories: true)
        var ruleFiles: [String] = []
        try? FileManager.default.removeItem(atPath: rulesFile)
        if let rules {
            try FileManager.default.copyItem(atPath: rules, toPath: rulesFile)
            ruleFiles.append(rulesFile)
        }
        let config: [String: Any] = [
            "global": ["scrape_interval": "\(interval)s", "evaluation_interval": "\(interval)s", "scrape_timeout": "\(max(1, interval - 1))s"],
            "rule_files": ruleFiles,
            "scrape_configs": [
                [
                    // One scrape configuration for every instance: each target names its own job (the
                    // service) and instance, as the other ways of running label them.
                    "job_name": "hailstorm",
                    "file_sd_configs": [["files": [targetsFile], "refresh_interval": "\(interval)s"]],
                ]
            ],
        ]
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            .write(to: URL(fileURLWithPath: configFile), options: .atomic)
        if !FileManager.default.fileExists(atPath: targetsFile) { try Data("[]".utf8).write(to: URL(fileURLWithPath: targetsFile)) }
        return [
            "--config.file=\(configFile)", "--storage.tsdb.path=\(dataFolder)", "--storage.tsdb.retention.time=2d",
            "--web.listen-address=127.0.0.1:\(port)",
        ]
    }
}

/// What Prometheus scrapes: every instance at its current port. An instance that died keeps its last
/// port until it reports a new one, so Prometheus sees it down (and alerts) instead of losing it.
final class ScrapeTargets {
    struct Target: Equatable {
        var job: String
        var instance: String
        var port: Int
    }

    private let file: String
    private var ports: [String: Target] = [:]
    private var written: [Target]?

    init(file: String) {
        self.file = file
    }

    /// Notes where `instance` listens now (nil: not known yet, the last known port stays).
    func note(job: String, instance: String, port: Int?) {
        guard let port else { return }
        ports[instance] = Target(job: job, instance: instance, port: port)
    }

    /// Rewrites the file (atomically) when a target changed; true when it did. Targets in instance order.
    @discardableResult
    func write() throws -> Bool {
        let targets = ports.values.sorted { $0.instance < $1.instance }
        guard targets != written else { return false }
        let groups = targets.map { target -> [String: Any] in
            ["targets": ["127.0.0.1:\(target.port)"], "labels": ["job": target.job, "instance": target.instance]]
        }
        try JSONSerialization.data(withJSONObject: groups, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            .write(to: URL(fileURLWithPath: file), options: .atomic)
        written = targets
        return true
    }
}
