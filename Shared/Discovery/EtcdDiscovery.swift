import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Synchronization

/// Discovery through etcd's v3 JSON API over HTTP.
///
/// An instance lives at `<prefix><service>/<instance id>` under a lease of `ttl`; the registration renews
/// the lease at a third of the TTL. A process that dies stops renewing, etcd deletes the key when the lease
/// ends, and every watcher sees the instance go.
///
/// With `credentials`, it signs in to an etcd that has authentication on (`/v3/auth/authenticate`) and
/// sends the token with every call; an answer that the token is not valid (expired, or etcd restarted)
/// signs in again and retries once.
public struct EtcdDiscovery: ServiceDiscovery {
    public let endpoint: String
    public let prefix: String
    public let ttl: Duration
    private let http: HTTPClient
    let logger: Logger
    private let credentials: (user: String, password: String)?
    private let token: EtcdToken

    /// - Parameters:
    ///   - endpoint: etcd's client URL (`http://127.0.0.1:2379`).
    ///   - prefix: the key prefix all Hailstorm instances live under.
    ///   - ttl: the lease TTL; an instance that dies is gone from discovery within it.
    public init(
        endpoint: String,
        prefix: String = "/hailstorm/services/",
        ttl: Duration = .seconds(10),
        httpClient: HTTPClient = .shared,
        credentials: (user: String, password: String)? = nil,
        logger: Logger = Logger(label: "hailstorm.discovery")
    ) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.prefix = prefix.hasSuffix("/") ? prefix : prefix + "/"
        self.ttl = ttl
        self.http = httpClient
        self.logger = logger
        self.credentials = credentials
        self.token = EtcdToken()
    }

    // MARK: ServiceDiscovery

    public func instances(of service: String) async throws -> [ServiceInstance] {
        let key = prefix + service + "/"
        let response = try await call("/v3/kv/range", [
            "key": Self.base64(key),
            "range_end": Self.base64(Self.prefixEnd(key)),
        ])
        let kvs = response["kvs"] as? [[String: Any]] ?? []
        return kvs.compactMap { kv in
            (kv["value"] as? String).flatMap(Self.decodeInstance)
        }.sorted { $0.id < $1.id }
    }

    public func register(_ instance: ServiceInstance) async throws -> any ServiceRegistration {
        let seconds = max(1, ttl.components.seconds)
        let grant = try await call("/v3/lease/grant", ["TTL": seconds])
        guard let leaseID = Self.string(grant["ID"]) else {
            throw DiscoveryError.badResponse("lease grant without an ID")
        }
        let value = try JSONEncoder().encode(instance)
        _ = try await call("/v3/kv/put", [
            "key": Self.base64(key(for: instance)),
            "value": value.base64EncodedString(),
            "lease": leaseID,
        ])
        logger.info("registered", metadata: ["instance": "\(instance.id)", "lease": "\(leaseID)", "ttl": "\(seconds)"])
        return EtcdRegistration(instance: instance, leaseID: leaseID, discovery: self)
    }

    public func watch(service: String?) -> AsyncThrowingStream<DiscoveryChange, any Error> {
        let events = self.events(under: service.map { prefix + $0 + "/" } ?? prefix)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await event in events {
                        switch event {
                        case .listed(let instances):
                            for instance in instances { continuation.yield(.added(instance)) }
                        case .changed(let changes):
                            for change in changes { continuation.yield(change) }
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Every registered instance, kept current by one watch on the prefix: the whole list at once, then
    /// again after each change etcd reports.
    public func follow() -> AsyncThrowingStream<[ServiceInstance], any Error>? {
        let events = self.events(under: prefix)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var current: [String: ServiceInstance] = [:]
                    for try await event in events {
                        switch event {
                        case .listed(let instances):
                            current = Dictionary(instances.map { ($0.id, $0) }, uniquingKeysWith: { $1 })
                        case .changed(let changes):
                            for change in changes {
                                switch change {
                                case .added(let instance): current[instance.id] = instance
                                case .removed(let id, _): current[id] = nil
                                }
                            }
                        }
                        continuation.yield(current.values.sorted { $0.id < $1.id })
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// What a watch on `key`'s range reports: the instances listed when it starts, then each message's
    /// changes after the revision of that listing, so nothing between the two is missed.
    private enum WatchEvent: Sendable {
        case listed([ServiceInstance])
        case changed([DiscoveryChange])
    }

    private func events(under key: String) -> AsyncThrowingStream<WatchEvent, any Error> {
        let http = self.http
        let endpoint = self.endpoint
        let prefix = self.prefix
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let snapshot = try await call("/v3/kv/range", [
                        "key": Self.base64(key), "range_end": Self.base64(Self.prefixEnd(key)),
                    ])
                    continuation.yield(.listed((snapshot["kvs"] as? [[String: Any]] ?? []).compactMap { kv in
                        (kv["value"] as? String).flatMap(Self.decodeInstance)
                    }))
                    let header = snapshot["header"] as? [String: Any]
                    let revision = (Self.string(header?["revision"]).flatMap { Int($0) } ?? 0) + 1
                    var request = HTTPClientRequest(url: endpoint + "/v3/watch")
                    request.method = .POST
                    request.headers.add(name: "Content-Type", value: "application/json")
                    if let token = try await authToken(renew: false) { request.headers.add(name: "Authorization", value: token) }
                    let body: [String: Any] = [
                        "create_request": [
                            "key": Self.base64(key),
                            "range_end": Self.base64(Self.prefixEnd(key)),
                            "start_revision": String(revision),
                        ]
                    ]
                    request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
                    let response = try await http.execute(request, timeout: .hours(24 * 365))
                    guard response.status == .ok else {
                        throw DiscoveryError.backend("watch answered \(response.status)")
                    }
                    var pending = Data()
                    for try await chunk in response.body {
                        pending.append(contentsOf: chunk.readableBytesView)
                        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                            let line = pending[pending.startIndex..<newline]
                            pending.removeSubrange(pending.startIndex...newline)
                            try Self.check(watchMessage: Data(line))
                            let changes = Self.changes(inWatchMessage: Data(line), prefix: prefix)
                            if !changes.isEmpty { continuation.yield(.changed(changes)) }
                        }
                        // etcd's gateway may send a message without a trailing newline.
                        if !pending.isEmpty, (try? JSONSerialization.jsonObject(with: pending)) != nil {
                            try Self.check(watchMessage: pending)
                            let changes = Self.changes(inWatchMessage: pending, prefix: prefix)
                            if !changes.isEmpty { continuation.yield(.changed(changes)) }
                            pending.removeAll()
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// A watch etcd ended (cancelled, or its revision compacted away): the changes after it are not
    /// coming, so the watcher must list again.
    static func check(watchMessage data: Data) throws {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return }
        let result = object["result"] as? [String: Any] ?? object
        if (result["canceled"] as? Bool) == true {
            throw DiscoveryError.backend("etcd ended the watch: \(result["cancel_reason"] as? String ?? "compacted or cancelled")")
        }
        if let error = object["error"] as? [String: Any] {
            throw DiscoveryError.backend("etcd's watch failed: \(error["message"] as? String ?? "\(error)")")
        }
    }

    public func ping() async throws {
        _ = try await call("/v3/maintenance/status", [:])
    }

    // MARK: Lease operations

    /// Renews the lease once; `timeout` bounds the call (a renewal that answers after the lease ended is no use).
    func keepAliveOnce(leaseID: String, timeout: Duration = .seconds(5)) async throws -> Int {
        let response = try await call("/v3/lease/keepalive", ["ID": leaseID], timeout: timeout)
        let result = response["result"] as? [String: Any] ?? response
        // A lease that no longer exists answers with no TTL (zero values are omitted).
        guard let ttl = Self.string(result["TTL"]).flatMap({ Int($0) }), ttl > 0 else {
            throw DiscoveryError.leaseExpired("lease \(leaseID) is gone")
        }
        return ttl
    }

    func revoke(leaseID: String) async throws {
        _ = try await call("/v3/lease/revoke", ["ID": leaseID])
    }

    func key(for instance: ServiceInstance) -> String {
        prefix + instance.service + "/" + instance.id
    }

    // MARK: Plumbing

    private func call(_ path: String, _ body: [String: Any], timeout: Duration = .seconds(5)) async throws -> [String: Any] {
        do {
            return try await call(path, body, token: try await authToken(renew: false), timeout: timeout)
        } catch let error as DiscoveryError where credentials != nil && error.isAuthentication {
            // The token expired, or etcd restarted and forgot it: sign in again, once.
            return try await call(path, body, token: try await authToken(renew: true), timeout: timeout)
        }
    }

    /// The token to send: nil without credentials; signs in when there is none yet or `renew`.
    private func authToken(renew: Bool) async throws -> String? {
        guard let credentials else { return nil }
        if !renew, let current = token.value { return current }
        let answer = try await call("/v3/auth/authenticate", ["name": credentials.user, "password": credentials.password], token: nil)
        guard let fresh = answer["token"] as? String else { throw DiscoveryError.badResponse("etcd sign-in without a token") }
        token.value = fresh
        return fresh
    }

    private func call(
        _ path: String, _ body: [String: Any], token: String?, timeout: Duration = .seconds(5)
    ) async throws -> [String: Any] {
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let token { request.headers.add(name: "Authorization", value: token) }
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        let response: HTTPClientResponse
        do {
            let (seconds, attoseconds) = timeout.components
            response = try await http.execute(request, timeout: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
        } catch {
            throw DiscoveryError.backend("etcd at \(endpoint) unreachable: \(error)")
        }
        let bytes = try await response.body.collect(upTo: 4 << 20)
        let text = String(buffer: bytes)
        guard response.status == .ok else {
            if text.contains("invalid auth token") || text.contains("user name is empty") || response.status == .unauthorized {
                throw DiscoveryError.authentication("etcd \(path) refused the credentials: \(text)")
            }
            throw DiscoveryError.backend("etcd \(path) answered \(response.status.code): \(text)")
        }
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw DiscoveryError.badResponse("etcd \(path) answered non-object JSON")
        }
        return object
    }

    static func changes(inWatchMessage data: Data, prefix: String) -> [DiscoveryChange] {
        guard !data.isEmpty,
            let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        else { return [] }
        let result = object["result"] as? [String: Any] ?? object
        let events = result["events"] as? [[String: Any]] ?? []
        return events.compactMap { event in
            guard let kv = event["kv"] as? [String: Any], let encodedKey = kv["key"] as? String,
                let keyData = Data(base64Encoded: encodedKey)
            else { return nil }
            let key = String(decoding: keyData, as: UTF8.self)
            if (event["type"] as? String) == "DELETE" {
                let parts = key.dropFirst(prefix.count).split(separator: "/")
                guard parts.count == 2 else { return nil }
                return .removed(instanceID: String(parts[1]), service: String(parts[0]))
            }
            return (kv["value"] as? String).flatMap(decodeInstance).map { .added($0) }
        }
    }

    static func decodeInstance(_ base64Value: String) -> ServiceInstance? {
        guard let data = Data(base64Encoded: base64Value) else { return nil }
        return try? JSONDecoder().decode(ServiceInstance.self, from: data)
    }

    static func base64(_ text: String) -> String {
        Data(text.utf8).base64EncodedString()
    }

    /// The end of a prefix range: the prefix with its last byte incremented.
    static func prefixEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        bytes[bytes.count - 1] += 1
        return String(decoding: bytes, as: UTF8.self)
    }

    /// etcd's JSON gateway writes 64-bit numbers as strings.
    static func string(_ value: Any?) -> String? {
        if let text = value as? String { return text }
        if let number = value as? NSNumber { return number.stringValue }
        return nil
    }
}

/// A registration in etcd: a key under a lease that `keepAlive` renews.
public struct EtcdRegistration: ServiceRegistration {
    public let instance: ServiceInstance
    public let leaseID: String
    let discovery: EtcdDiscovery

    /// Renews the lease every third of the TTL, each call bounded by that third. A failed or late renewal
    /// is tried again a quarter of that later, for as long as the lease can still be alive: a single slow
    /// answer from etcd must not let the instance vanish from discovery. Throws when the lease is gone, or
    /// when no renewal got through within a whole TTL.
    public func keepAlive() async throws {
        let interval = discovery.ttl / 3
        var renewed = ContinuousClock.now
        var pause = interval
        while true {
            try await Task.sleep(for: pause)
            do {
                _ = try await discovery.keepAliveOnce(leaseID: leaseID, timeout: interval)
                renewed = .now
                pause = interval
            } catch let error as DiscoveryError where error.isLeaseExpired {
                throw error
            } catch {
                guard ContinuousClock.now - renewed < discovery.ttl else { throw error }
                discovery.logger.warning(
                    "lease renewal failed; trying again", metadata: ["lease": "\(leaseID)", "error": "\(error)"])
                pause = interval / 4
            }
        }
    }

    public func deregister() async throws {
        try await discovery.revoke(leaseID: leaseID)
    }
}

/// The current etcd auth token, shared by the copies of one `EtcdDiscovery`.
final class EtcdToken: Sendable {
    private let state = Mutex<String?>(nil)

    var value: String? {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}
