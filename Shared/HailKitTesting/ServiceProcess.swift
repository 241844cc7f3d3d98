import Foundation

/// A built Hailstorm service (`hailstorm-<name>`) running as its own process, as in production: its own
/// port, data folder and log, the test's Redis and etcd. It can be killed (SIGKILL, a crash) and started
/// again on the same port and data, which is how tests prove that nothing accepted is lost.
public final class ServiceProcess: @unchecked Sendable {
    // Safe: `process` is replaced only by the test task that owns this value, between uses.
    public let name: String
    public let port: Int
    public let dataDirectory: String
    public private(set) var arguments: [String]
    public private(set) var process: TestProcess?

    /// - Parameters:
    ///   - name: the service (`order` runs `hailstorm-order`).
    ///   - redisPort: the Redis it uses.
    ///   - discoveryPrefix: the etcd prefix the platform under test registers under.
    ///   - options: further `--key value` options (`["matching-dispatch-mode": "offer"]`).
    ///
    /// It gets the test run's JWKS and its own private key (`TestKeys`).
    public init(
        _ name: String, redisPort: Int, discoveryPrefix: String, options: [String: String] = [:]
    ) throws {
        self.name = name
        self.port = try TestEnvironment.freePort()
        self.dataDirectory = try TestEnvironment.temporaryDirectory("\(name)-data")
        var values: [String: String] = [
            "http-port": String(port), "redis-port": String(redisPort),
            "discovery-etcd-endpoint": TestEnvironment.etcdEndpoint, "discovery-prefix": discoveryPrefix,
            "discovery-ttl-seconds": "3", "data-dir": dataDirectory, "auth-jwks-file": TestKeys.jwksFile,
            "auth-signing-key": TestKeys.privateKey(name) ?? "",
            "instance-id": "\(name)-\(port)", "log-level": "info",
        ]
        for (key, value) in options { values[key] = value }
        self.arguments = values.sorted { $0.key < $1.key }.flatMap { ["--\($0.key)", $0.value] }
    }

    public var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Starts the process and waits until `/readyz` answers 200.
    public func start(timeout: Duration = .seconds(60)) async throws {
        process = try TestProcess(
            executable: TestEnvironment.executablesDirectory.appendingPathComponent("hailstorm-\(name)").path,
            arguments: arguments, name: name)
        do {
            try await TestProcess.waitUntilReady(baseURL + "/readyz", timeout: timeout)
        } catch {
            throw TestProcessError("\(name) not ready: \(error)\n\(output().suffix(3000))")
        }
    }

    /// A crash: SIGKILL, no goodbye.
    public func kill() { process?.kill(SIGKILL) }

    /// A graceful stop (SIGTERM); returns the exit status.
    @discardableResult
    public func stop() -> Int32 { process?.terminate() ?? 0 }

    public func output() -> String { process?.output() ?? "" }

    deinit { process?.kill() }
}
