/// One running instance of a service, as discovery knows it.
public struct ServiceInstance: Codable, Sendable, Hashable {
    /// Unique per process (`login-7f3a…`).
    public var id: String
    public var service: String
    public var host: String
    public var port: Int
    /// The shard of its service's data this instance owns (`Shards`); nil for a service that is not split.
    public var shard: Int?

    public init(id: String, service: String, host: String, port: Int, shard: Int? = nil) {
        self.id = id
        self.service = service
        self.host = host
        self.port = port
        self.shard = shard
    }

    public var baseURL: String { "http://\(host):\(port)" }
}

/// A change seen by a watcher.
public enum DiscoveryChange: Sendable, Hashable {
    case added(ServiceInstance)
    /// The instance's registration ended: it deregistered, or its lease ran out because it died.
    case removed(instanceID: String, service: String)
}

/// Finds instances of services and announces this process's own.
///
/// Two backends: `EtcdDiscovery` (register with a lease, keep it alive, watch a prefix) for local and VM
/// runs, and `StaticDiscovery` (a service name is a host name) for compose and Kubernetes, where the
/// platform keeps the list.
public protocol ServiceDiscovery: Sendable {
    /// Instances of `service` that are registered now.
    func instances(of service: String) async throws -> [ServiceInstance]
    /// Announces `instance` until the returned registration ends.
    func register(_ instance: ServiceInstance) async throws -> any ServiceRegistration
    /// Changes to the instances of `service` (every service when nil), starting with the current ones as `.added`.
    func watch(service: String?) -> AsyncThrowingStream<DiscoveryChange, any Error>
    /// Whether the backend answers: what readiness checks ask.
    func ping() async throws
    /// Every registered instance of every service, the whole list again after each change, for as long as
    /// the backend can tell; nil when it cannot (then `instances(of:)` is asked again from time to time).
    func follow() -> AsyncThrowingStream<[ServiceInstance], any Error>?
}

extension ServiceDiscovery {
    public func follow() -> AsyncThrowingStream<[ServiceInstance], any Error>? { nil }
}

/// A live registration: kept alive until `deregister`.
public protocol ServiceRegistration: Sendable {
    var instance: ServiceInstance { get }
    /// Keeps the registration alive until the task is cancelled or the backend refuses.
    func keepAlive() async throws
    /// Removes the instance at once (graceful shutdown does this before the server stops accepting).
    func deregister() async throws
}

/// An error of discovery.
public struct DiscoveryError: Error, Hashable, CustomStringConvertible {
    private enum Code: Hashable {
        case backend
        case leaseExpired
        case badResponse
        case authentication
    }

    private let code: Code
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The backend answered with an error or could not be reached.
    public static func backend(_ message: String) -> DiscoveryError { .init(.backend, message) }
    /// The registration's lease is gone (the process stalled longer than its TTL).
    public static func leaseExpired(_ message: String) -> DiscoveryError { .init(.leaseExpired, message) }
    /// The backend answered something this client does not understand.
    public static func badResponse(_ message: String) -> DiscoveryError { .init(.badResponse, message) }

    /// The backend refused the credentials or the token (expired, or unknown after a restart).
    public static func authentication(_ message: String) -> DiscoveryError { .init(.authentication, message) }

    public var isLeaseExpired: Bool { code == .leaseExpired }
    public var isAuthentication: Bool { code == .authentication }

    public var description: String { "discovery: \(message)" }
}
