import Foundation
import HailKit

/// Where the test script started the real Redis and etcd, and helpers for unique names and free ports.
///
/// `scripts/test.sh` starts redis-server and etcd on free loopback ports and passes them as
/// `HAILSTORM_TEST_REDIS_PORT` and `HAILSTORM_TEST_ETCD_ENDPOINT`.
public enum TestEnvironment {
    public static var redisPort: Int {
        guard let value = ProcessInfo.processInfo.environment["HAILSTORM_TEST_REDIS_PORT"], let port = Int(value) else {
            fatalError("HAILSTORM_TEST_REDIS_PORT is not set: run the tests with scripts/test.sh, which starts Redis and etcd")
        }
        return port
    }

    public static var etcdEndpoint: String {
        guard let value = ProcessInfo.processInfo.environment["HAILSTORM_TEST_ETCD_ENDPOINT"] else {
            fatalError("HAILSTORM_TEST_ETCD_ENDPOINT is not set: run the tests with scripts/test.sh, which starts Redis and etcd")
        }
        return value
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
