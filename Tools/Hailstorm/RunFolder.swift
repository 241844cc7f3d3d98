import Foundation

/// The run folder of a local run (`.hailstorm/run` by default): what `up` planned, what the supervisor
/// sees, logs, data, the signing key and the admin's credentials.
struct RunFolder: Sendable {
    let path: String

    init(_ path: String) {
        self.path = URL(fileURLWithPath: path).standardizedFileURL.path
    }

    var logs: String { path + "/logs" }
    var data: String { path + "/data" }
    var planFile: String { path + "/plan.json" }
    var stateFile: String { path + "/state.json" }
    var supervisorPIDFile: String { path + "/supervisor.pid" }
    var adminFile: String { path + "/admin.json" }
    var keysFolder: String { path + "/keys" }
    /// Where each service started on port 0 writes the port it bound.
    var ports: String { path + "/ports" }

    func log(_ instance: String) -> String { logs + "/\(instance).log" }

    func prepare() throws {
        for folder in [path, logs, data] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
    }

    /// The supervisor's pid when one is alive.
    var runningSupervisor: Int32? {
        guard let text = try? String(contentsOfFile: supervisorPIDFile, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), kill(pid, 0) == 0
        else { return nil }
        return pid
    }

    func read<T: Decodable>(_ type: T.Type, from file: String) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: URL(fileURLWithPath: file)))
    }

    /// Writes JSON atomically (a reader never sees half a file), readable by the owner only when `private`.
    func write<T: Encodable>(_ value: T, to file: String, private isPrivate: Bool = false) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(value).write(to: URL(fileURLWithPath: file), options: .atomic)
        if isPrivate { chmod(file, 0o600) }
    }

    /// The run's token keys (`keys/`): a private key per service — login's alone signs users' tokens —
    /// and the JWKS of their public keys, made once per run folder; never committed.
    func tokenKeys(services: [String]) throws -> TokenKeyFolder.Keys {
        let keys = TokenKeyFolder(path: keysFolder)
        if let existing = try? keys.read(), services.allSatisfy({ existing.privateKeys[$0] != nil }) {
            return existing
        }
        return try keys.create(issuers: services)
    }

    /// The admin account login creates at start; operators and scripts sign in with it.
    func admin() throws -> AdminCredentials {
        if let existing = try? read(AdminCredentials.self, from: adminFile) { return existing }
        let admin = AdminCredentials(phone: "+10000000000", password: Self.randomToken(24))
        try write(admin, to: adminFile, private: true)
        return admin
    }

    /// The key the ad service signs impression and click tokens with, made once per run folder, so that
    /// an ad shown before the service restarts can still be counted after.
    func adTokenKey() throws -> String {
        struct AdKey: Codable { var key: String }
        let file = path + "/ad-token-key.json"
        if let existing = try? read(AdKey.self, from: file) { return existing.key }
        let key = AdKey(key: Self.randomToken(48))
        try write(key, to: file, private: true)
        return key.key
    }

    static func randomToken(_ length: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
    }
}

struct AdminCredentials: Codable, Sendable {
    var phone: String
    var password: String
}

/// What `up` asked for: the supervisor starts exactly this.
struct RunPlan: Codable, Sendable {
    var binDirectory: String
    var gatewayPort: Int
    var replicas: [String: Int]
    /// Extra `--key value` options per service (`matching` → `["matching-dispatch-mode": "offer"]`).
    var options: [String: [String: String]]
    /// Prometheus beside the services, or nil (`--no-prometheus`, or not installed).
    var prometheus: PrometheusPlan?
    /// Redis as a cluster of this many nodes (`--redis-cluster`), or nil for one redis-server.
    var redisCluster: Int? = nil

    /// A cluster's masters and replicas per master: 3 nodes are three masters; an even number from 6 is
    /// half masters, each with a replica.
    static func clusterShape(nodes: Int) -> (masters: Int, replicas: Int)? {
        if nodes == 3 { return (3, 0) }
        if nodes >= 6, nodes <= 16, nodes % 2 == 0 { return (nodes / 2, 1) }
        return nil
    }
}

/// What the supervisor sees, rewritten every second (`hailstorm status` reads it).
struct RunState: Codable, Sendable {
    var supervisorPID: Int32
    var startedAt: Double
    var updatedAt: Double
    var gateway: String
    /// `running`, `stopping` or `stopped`.
    var phase: String
    var instances: [InstanceState]
}

struct InstanceState: Codable, Sendable {
    /// `gateway`, `redis`, `etcd`…
    var service: String
    /// `gateway-1`.
    var instance: String
    var pid: Int32?
    /// Where it listens, while it runs and once it said (a service started on port 0 reports it).
    var port: Int?
    /// `starting`, `ready`, `unready`, `restarting`, `stopped`.
    var health: String
    var restarts: Int
    /// When the current process started (seconds since 1970).
    var startedAt: Double?
    var lastExit: String?
    var log: String
}
