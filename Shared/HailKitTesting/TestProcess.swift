import AsyncHTTPClient
import Foundation
import HailKit
import NIOCore

/// A real process a test starts and may kill: redis-server, or a built Hailstorm executable.
public final class TestProcess: @unchecked Sendable {
    // `process` is only touched by the test that owns this object, one call at a time.
    private let process: Process
    public let name: String
    public let logPath: String

    public init(executable: String, arguments: [String], environment: [String: String] = [:], name: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let log = NSTemporaryDirectory() + TestEnvironment.unique(name) + ".log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        self.process = process
        self.name = name
        self.logPath = log
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// Sends `signal` (SIGKILL to simulate a crash, SIGTERM for a graceful stop) and waits for the exit.
    public func kill(_ signal: Int32 = SIGKILL) {
        guard process.isRunning else { return }
        _ = Foundation.kill(process.processIdentifier, signal)
        process.waitUntilExit()
    }

    /// Sends `signal` without waiting (SIGSTOP and SIGCONT: a process that hangs, then comes back).
    public func send(_ signal: Int32) {
        guard process.isRunning else { return }
        _ = Foundation.kill(process.processIdentifier, signal)
    }

    /// Waits for the process to end on its own and returns its exit status.
    public func waitForExit() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Sends `signal` and returns the exit status once the process has ended.
    public func terminate(_ signal: Int32 = SIGTERM) -> Int32 {
        if process.isRunning {
            _ = Foundation.kill(process.processIdentifier, signal)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    /// The process's output so far, for failure messages.
    public func output() -> String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    deinit {
        if process.isRunning {
            _ = Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Polls `url` until it answers 200 or `timeout` passes.
    public static func waitUntilReady(_ url: String, timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            do {
                let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(1))
                if response.status == .ok { return }
            } catch {}
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestProcessError("\(url) not ready within \(timeout)")
    }
}

/// A redis-server of a test's own, for tests that stop and restart it.
public final class RedisServerProcess: @unchecked Sendable {
    // Mutated only by the owning test, sequentially.
    public let port: Int
    private let extraArguments: [String]
    private var process: TestProcess?

    /// `arguments`: extra flags (`--requirepass secret`).
    public init(arguments: [String] = []) throws {
        self.port = try TestEnvironment.freePort()
        self.extraArguments = arguments
        try start()
    }

    public func start() throws {
        process = try TestProcess(
            executable: "/usr/bin/redis-server",
            arguments: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"] + extraArguments,
            name: "redis-\(port)")
        // Wait until it accepts connections.
        for _ in 0..<100 {
            if Self.canConnect(port) { return }
            usleep(20_000)
        }
        throw TestProcessError("redis-server on \(port) did not start: \(process?.output() ?? "")")
    }

    public func kill(_ signal: Int32 = SIGKILL) {
        process?.kill(signal)
        process = nil
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a hung Redis.
    public func hang() {
        process?.send(SIGSTOP)
    }

    /// Lets a frozen server run again (SIGCONT).
    public func resume() {
        process?.send(SIGCONT)
    }

    deinit {
        process?.send(SIGCONT)
        process?.kill()
    }

    static func canConnect(_ port: Int) -> Bool { LoopbackPorts.isListening(port) }
}

/// An etcd of a test's own on free loopback ports, for what the shared one cannot show (authentication
/// on, etcd killed and started again).
public final class EtcdServerProcess: @unchecked Sendable {
    // Set in init and by `restart`, which only the owning test calls, one call at a time.
    public let clientPort: Int
    private let peerPort: Int
    private let arguments: [String]
    private var data: String
    private var process: TestProcess

    public var endpoint: String { "http://127.0.0.1:\(clientPort)" }

    /// `arguments`: extra flags (`--auth-token-ttl 2`).
    public init(arguments: [String] = []) async throws {
        clientPort = try TestEnvironment.freePort()
        peerPort = try TestEnvironment.freePort()
        self.arguments = arguments
        data = try TestEnvironment.temporaryDirectory("etcd")
        process = try Self.launch(clientPort: clientPort, peerPort: peerPort, data: data, arguments: arguments)
        try await TestProcess.waitUntilReady(endpoint + "/health", timeout: .seconds(20))
    }

    private static func launch(clientPort: Int, peerPort: Int, data: String, arguments: [String]) throws -> TestProcess {
        let client = "http://127.0.0.1:\(clientPort)"
        let peer = "http://127.0.0.1:\(peerPort)"
        return try TestProcess(
            executable: "/usr/bin/etcd",
            arguments: [
                "--name", "test", "--data-dir", data + "/data", "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "test=\(peer)",
            ] + arguments,
            name: "etcd-\(clientPort)")
    }

    /// SIGKILLs etcd.
    public func kill() {
        process.kill()
    }

    /// Starts etcd again on the same ports once killed: with its data (leases and keys come back), or
    /// from an empty folder (every registration is gone, as after losing the volume).
    public func restart(keepingData: Bool) async throws {
        process.kill()
        if !keepingData { data = try TestEnvironment.temporaryDirectory("etcd") }
        process = try Self.launch(clientPort: clientPort, peerPort: peerPort, data: data, arguments: arguments)
        try await TestProcess.waitUntilReady(endpoint + "/health", timeout: .seconds(20))
    }

    deinit { process.kill() }
}
