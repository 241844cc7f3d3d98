import AsyncHTTPClient
import Configuration
import Foundation
import HailKit
import Logging
import ServiceLifecycle
import NIOCore
import NIOHTTP1

extension ConfigReader {
    /// A reader for a service under test: the real Redis and etcd of the test run, a port of its own,
    /// a fresh data folder, short discovery TTLs, the test run's JWKS (and `service`'s private key from
    /// `TestKeys`, when given), plus `overrides`.
    public static func testing(_ overrides: [String: String] = [:], redisPort: Int? = nil, service: String? = nil) throws -> ConfigReader {
        var values: [String: String] = [
            "http.port": "0",
            "redis.port": String(redisPort ?? TestEnvironment.redisPort),
            "discovery.etcd.endpoint": TestEnvironment.etcdEndpoint,
            "discovery.ttl.seconds": "2",
            "data.dir": try TestEnvironment.temporaryDirectory("data"),
            "auth.bcrypt.cost": "4",
            "auth.jwks": TestKeys.jwks,
            "log.level": "warning",
        ]
        if let service, let key = TestKeys.privateKey(service) { values["auth.signing.key"] = key }
        for (key, value) in overrides { values[key] = value }
        var defaults: [String: ConfigValue] = [:]
        for (key, value) in values {
            // Typed like the keys are read: numbers as integers, true and false as flags, everything else as text.
            let isNumber = !value.isEmpty && value.allSatisfy(\.isNumber)
            if isNumber {
                defaults[key] = ConfigValue(.int(Int(value)!), isSecret: false)
            } else if let flag = Bool(value) {
                defaults[key] = ConfigValue(.bool(flag), isSecret: false)
            } else {
                defaults[key] = ConfigValue(.string(value), isSecret: false)
            }
        }
        return .hailstorm(arguments: ["test"], environment: [:], defaults: defaults)
    }
}

/// Runs `application` (a real server on a free port) for the duration of `body`, then shuts it down
/// gracefully, as SIGTERM would.
public func withRunningService<T: Sendable>(
    _ application: HailApplication,
    _ body: @Sendable (_ baseURL: String) async throws -> T
) async throws -> T {
    let serviceGroup = ServiceGroup(configuration: .init(services: [application], logger: Logger(label: "test")))
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await serviceGroup.run() }
        guard let port = await application.port() else {
            try await group.waitForAll()
            throw TestProcessError("\(application.name) did not start")
        }
        do {
            let result = try await body("http://127.0.0.1:\(port)")
            await serviceGroup.triggerGracefulShutdown()
            try await group.waitForAll()
            return result
        } catch {
            await serviceGroup.triggerGracefulShutdown()
            try? await group.waitForAll()
            throw error
        }
    }
}

/// An answer as a test sees it.
public struct TestResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: Data

    public var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:]
    }

    public var text: String { String(decoding: body, as: UTF8.self) }

    public func header(_ name: String) -> String? { headers.first(name: name) }
}

/// Sends one request with AsyncHTTPClient.
public func testRequest(
    _ method: HTTPMethod,
    _ url: String,
    json: Any? = nil,
    rawBody: String? = nil,
    headers: [String: String] = [:],
    timeout: TimeAmount = .seconds(10)
) async throws -> TestResponse {
    var request = HTTPClientRequest(url: url)
    request.method = method
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let json {
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
    } else if let rawBody {
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: rawBody))
    }
    let response = try await HTTPClient.shared.execute(request, timeout: timeout)
    let body = try await response.body.collect(upTo: 16 << 20)
    return TestResponse(status: Int(response.status.code), headers: response.headers, body: Data(body.readableBytesView))
}
