import AsyncHTTPClient
import Discovery
import Foundation
import HailKitTesting
import NIOCore
import Testing

/// Discovery against an etcd that requires a sign-in, as compose runs it.
@Suite("Discovery through an etcd with authentication on", .timeLimit(.minutes(2)))
struct EtcdAuthenticationTests {
    /// Calls etcd's JSON API (as root once auth is on).
    func post(_ etcd: EtcdServerProcess, _ path: String, _ body: [String: Any], token: String? = nil) async throws -> [String: Any] {
        var request = HTTPClientRequest(url: etcd.endpoint + path)
        request.method = .POST
        if let token { request.headers.add(name: "Authorization", value: token) }
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        try #require(response.status == .ok, "\(path): \(String(buffer: bytes))")
        return (try JSONSerialization.jsonObject(with: Data(bytes.readableBytesView)) as? [String: Any]) ?? [:]
    }

    /// Root, a `hailstorm` user whose role may read and write the prefix only, then authentication on.
    func enableAuthentication(_ etcd: EtcdServerProcess, prefix: String) async throws {
        _ = try await post(etcd, "/v3/auth/user/add", ["name": "root", "password": "root-pass"])
        _ = try await post(etcd, "/v3/auth/user/grant", ["user": "root", "role": "root"])
        _ = try await post(etcd, "/v3/auth/role/add", ["name": "hailstorm"])
        let end = String(decoding: Array(prefix.utf8.dropLast()) + [prefix.utf8.last! + 1], as: UTF8.self)
        _ = try await post(etcd, "/v3/auth/role/grant", [
            "name": "hailstorm",
            "perm": ["permType": "READWRITE", "key": Data(prefix.utf8).base64EncodedString(), "range_end": Data(end.utf8).base64EncodedString()],
        ])
        _ = try await post(etcd, "/v3/auth/user/add", ["name": "hailstorm", "password": "hs-pass"])
        _ = try await post(etcd, "/v3/auth/user/grant", ["user": "hailstorm", "role": "hailstorm"])
        _ = try await post(etcd, "/v3/auth/enable", [:])
    }

    @Test("a service signs in and registers; without credentials, or with wrong ones, it cannot; an expired token is renewed")
    func signsIn() async throws {
        let etcd = try await EtcdServerProcess(arguments: ["--auth-token", "simple", "--auth-token-ttl", "2"])
        let prefix = "/hailstorm/test/"
        try await enableAuthentication(etcd, prefix: prefix)

        let signedIn = EtcdDiscovery(endpoint: etcd.endpoint, prefix: prefix, ttl: .seconds(5), credentials: ("hailstorm", "hs-pass"))
        let instance = ServiceInstance(id: "order-1", service: "order", host: "127.0.0.1", port: 9002)
        let registration = try await signedIn.register(instance)
        #expect(try await signedIn.instances(of: "order") == [instance])

        let anonymous = EtcdDiscovery(endpoint: etcd.endpoint, prefix: prefix, ttl: .seconds(5))
        await #expect(throws: DiscoveryError.self) { _ = try await anonymous.instances(of: "order") }
        let wrong = EtcdDiscovery(endpoint: etcd.endpoint, prefix: prefix, ttl: .seconds(5), credentials: ("hailstorm", "guess"))
        await #expect(throws: DiscoveryError.self) { _ = try await wrong.instances(of: "order") }

        // Past the token's 2 s life, the next call signs in again on its own.
        try await Task.sleep(for: .seconds(3))
        #expect(try await signedIn.instances(of: "order") == [instance])
        try await registration.deregister()
        #expect(try await signedIn.instances(of: "order").isEmpty)
    }
}
