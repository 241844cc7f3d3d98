import Foundation
import HailKit

/// Where the test script started the real Redis and etcd, and helpers for unique names and free ports.
///
/// `scripts/test.sh` starts redis-server and etcd on free loopback ports and passes them as
/// `HAILSTORM_TEST_REDIS_PORT` and `HAILSTORM_TEST_ETCD_ENDPOINT`.
///
/// Suites that need them carry `.enabled(if: TestEnvironment.hasBackends, …)`: without the variables they
/// are skipped with that reason instead of failing. Read without them, the values are a port and an
/// endpoint nothing listens on, so a test that forgot the trait fails with a connection error.
public enum TestEnvironment {
    /// Whether `scripts/test.sh` (or whoever runs the tests) said where Redis and etcd are.
    public static var hasBackends: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["HAILSTORM_TEST_REDIS_PORT"].flatMap { Int($0) } != nil && environment["HAILSTORM_TEST_ETCD_ENDPOINT"] != nil
    }

    public static var redisPort: Int {
        ProcessInfo.processInfo.environment["HAILSTORM_TEST_REDIS_PORT"].flatMap { Int($0) } ?? 1
    }

    public static var etcdEndpoint: String {
        ProcessInfo.processInfo.environment["HAILSTORM_TEST_ETCD_ENDPOINT"] ?? "http://127.0.0.1:1"
    }

    /// A name no other test uses: keys, streams, groups, prefixes.
    public static func unique(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.lowercased().prefix(12))"
    }

    /// A fresh directory under the system's temporary folder.
    public static func temporaryDirectory(_ name: String = "hailstorm-test") throws -> String {
        let path = NSTemporaryDirectory() + unique(name)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago.
    public static func freePort() throws -> Int {
        guard let port = LoopbackPorts.free() else { throw TestProcessError("no free loopback port") }
        return port
    }

    /// The folder holding the built executables (`hailstorm-login`…), beside the test bundle.
    public static var executablesDirectory: URL {
        let me = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0])
        var directory = me.deletingLastPathComponent()
        // Inside an .xctest bundle on some layouts.
        while directory.pathExtension == "xctest" || directory.lastPathComponent == "MacOS"
            || directory.lastPathComponent == "Contents"
        {
            directory.deleteLastPathComponent()
        }
        return directory
    }
}

public struct TestProcessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
