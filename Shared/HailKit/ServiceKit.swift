import AsyncHTTPClient
import Configuration
import Contracts
import Discovery
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisKit
import ServiceLifecycle

/// Everything a Hailstorm service is made of, built from configuration by one call.
///
/// ```swift
/// var kit = try ServiceKit(name: "login", reader: reader, defaultPort: 9001)
/// let store = try SQLiteStore(configuration: .init(path: kit.configuration.sqlitePath), migrations: …)
/// kit.addReadinessCheck("sqlite") { try await store.ping() }
/// kit.onShutdown { try store.close() }
/// let router = kit.makeRouter()
/// LoginController(…).register(on: router)
/// return kit.makeApplication(router: router)
/// ```
public struct ServiceKit: Sendable {
    public let configuration: ServiceConfiguration
    public let reader: ConfigReader
    public let logger: Logger
    public let redis: RedisClient
    public let discovery: any ServiceDiscovery
    public let httpClient: HTTPClient
    public let clients: ServiceClient
    private(set) var readinessChecks: [ReadinessCheck] = []
    private(set) var shutdownHooks: [@Sendable () async throws -> Void] = []
    private(set) var backgroundServices: [any Service] = []

    public var name: String { configuration.name }

    /// `defaultConnectionsPerClient`: the cap on one peer address's open connections unless configured
    /// (`http.connections.per.client`); the edge of the platform sets one, services behind it need none.
    /// `defaultHandlersOnLoop`: whether requests run on their connection's event loop unless configured
    /// (`http.handlers.on.loop`).
    public init(
        name: String, reader: ConfigReader, defaultPort: Int, defaultConnectionsPerClient: Int = 0, defaultHandlersOnLoop: Bool = false
    ) throws {
        let configuration = try ServiceConfiguration(
            name: name, reader: reader, defaultPort: defaultPort, defaultConnectionsPerClient: defaultConnectionsPerClient,
            defaultHandlersOnLoop: defaultHandlersOnLoop)
        self.configuration = configuration
        self.reader = reader
        LoggingBootstrap.bootstrapOnce(configuration)
        var logger = Logger(label: "hailstorm.\(name)")
        logger.logLevel = configuration.logLevel
        self.logger = logger
        _ = HailMetrics.registry

        self.redis = RedisClient(configuration: configuration.redis, logger: logger)
        self.httpClient = ServiceHTTPClient.shared
        switch configuration.discoveryBackend {
        case "static":
            self.discovery = StaticDiscovery(parsing: configuration.staticServices, defaultPort: 8080)
        case "etcd":
            self.discovery = EtcdDiscovery(
                endpoint: configuration.etcdEndpoint, prefix: configuration.discoveryPrefix, ttl: configuration.discoveryTTL,
                httpClient: httpClient, credentials: configuration.etcdCredentials, logger: logger)
        default:
            throw ConfigurationError("discovery.backend must be etcd or static, not \(configuration.discoveryBackend)")
        }
        self.clients = ServiceClient(discovery: discovery, configuration: configuration.client, logger: logger)

        let redis = self.redis
        let discovery = self.discovery
        readinessChecks.append(ReadinessCheck("redis") { try await redis.ping() })
        readinessChecks.append(ReadinessCheck("discovery") { try await discovery.ping() })
        // Closed last, after the stores: in-flight work may still write to Redis.
        shutdownHooks.append { await redis.shutdown() }
    }

    /// A dependency `/readyz` checks.
    public mutating func addReadinessCheck(_ name: String, _ check: @escaping @Sendable () async throws -> Void) {
        readinessChecks.append(ReadinessCheck(name, check))
    }

    /// Work to do at shutdown after the server has drained (close stores). Runs in the order added, before
    /// the kit's own Redis client closes.
    public mutating func onShutdown(_ hook: @escaping @Sendable () async throws -> Void) {
        shutdownHooks.insert(hook, at: shutdownHooks.count - 1)
    }

    /// Long-running work (outbox relay, consumers): started with the service, stopped after the server drains.
    public mutating func addService(_ service: any Service) {
        backgroundServices.append(service)
    }

    /// The router with Hailstorm's route metrics and the health routes already on it.
    /// Add readiness checks before calling this: `/readyz` runs the checks known at this point.
    public func makeRouter() -> Router<HailRequestContext> {
        let router = Router(context: HailRequestContext.self)
        router.middlewares.add(MetricsMiddleware())
        HealthController(
            service: configuration.name, instance: configuration.instanceID, checks: readinessChecks, timeout: .seconds(1)
        ).register(on: router)
        return router
    }

    /// The runnable service: the HTTP server, its background services, discovery registration and the
    /// ordered graceful shutdown. `channel` makes the connection's protocol handler from the responder and
    /// the kit's HTTP/1.1 settings (the gateway adds the WebSocket upgrade); every connection goes through
    /// the edge first (`EdgeChannel`: header-read timeout, connections per client, malformed requests).
    public func makeApplication(
        router: Router<HailRequestContext>,
        channel: @escaping @Sendable (@escaping HTTPChannelHandler.Responder, HTTP1Channel.Configuration) -> any ServerChildChannel = {
            HTTP1Channel(responder: $0, configuration: $1)
        }
    ) -> HailApplication {
        let idleTimeout = TimeAmount.nanoseconds(configuration.idleTimeout.nanosecondsValue)
        let server = HTTPServerBuilder.edge(
            http1: HTTP1Channel.Configuration(idleTimeout: idleTimeout), headerTimeout: configuration.idleTimeout,
            connectionsPerClient: configuration.connectionsPerClient, answersMalformedRequests: true,
            handlersOnLoop: configuration.handlersOnLoop, makeChannel: channel)
        let responder = HailResponder(
            inner: router.buildResponder(), bodyLimit: configuration.bodyLimit, defaultTimeout: configuration.requestTimeout,
            traceLines: TraceLines(
                redis: redis, service: configuration.name, instance: configuration.instanceID,
                perSecond: (try? reader.int(forKey: "trace.sampled.per.second", default: 50, in: 0...1_000_000)) ?? 50))
        let bound = BoundAddress()
        let portFile = configuration.portFile
        let logger = self.logger
        let application = Application(
            responder: responder,
            server: server,
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port),
                serverName: "hailstorm-\(configuration.name)"
            ),
            services: [ShutdownHooksService(hooks: shutdownHooks, logger: logger)] + backgroundServices,
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                if let portFile {
                    do {
                        try "\(port)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
                    } catch {
                        logger.error("port file not written", metadata: ["file": "\(portFile)", "error": "\(error)"])
                    }
                }
                bound.set(port)
            },
            logger: logger
        )
        let registrar = RegistrationService(
            discovery: discovery,
            service: configuration.name,
            instanceID: configuration.instanceID,
            host: configuration.advertisedHost,
            shard: configuration.isSharded ? configuration.shard : nil,
            bound: bound,
            logger: logger
        )
        return HailApplication(name: configuration.name, application: application, registrar: registrar, bound: bound, logger: logger)
    }
}

/// A configuration value that cannot be used.
public struct ConfigurationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A Hailstorm service ready to run.
///
/// Runs as a service group of [application, registrar]. Graceful shutdown (SIGTERM/SIGINT) goes in the
/// reverse order: the registrar deregisters from discovery first, so callers stop choosing this instance;
/// then the server stops accepting and drains requests in flight; then background services stop; then
/// the shutdown hooks close the stores and clients.
public struct HailApplication: Service {
    public let name: String
    public let application: Application<HailResponder<RouterResponder<HailRequestContext>>>
    let registrar: RegistrationService
    let bound: BoundAddress
    let logger: Logger

    public func run() async throws {
        try await run(ServiceGroup(configuration: .init(services: [application, registrar], logger: logger)))
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    public func runService() async throws {
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: application),
                    .init(service: registrar),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            ))
        try await run(group)
    }

    /// Runs the group; a failure before the server bound (a taken port) releases whoever waits for `port()`.
    private func run(_ group: ServiceGroup) async throws {
        do {
            try await group.run()
        } catch {
            bound.fail()
            throw error
        }
    }

    /// The port the server listens on, once it does (useful with port 0).
    public func port() async -> Int? {
        await bound.wait()
    }
}

/// The port the server bound, published once it runs.
final class BoundAddress: Sendable {
    private enum State { case waiting, bound(Int), failed }
    private let state = NIOLockedValueBox(State.waiting)

    func set(_ value: Int) {
        state.withLockedValue { $0 = .bound(value) }
    }

    func fail() {
        state.withLockedValue { state in
            if case .waiting = state { state = .failed }
        }
    }

    /// Waits for the server to bind; nil when it failed to start or the task is cancelled first.
    func wait() async -> Int? {
        while !Task.isCancelled {
            switch state.withLockedValue({ $0 }) {
            case .bound(let port): return port
            case .failed: return nil
            case .waiting: try? await Task.sleep(for: .milliseconds(10))
            }
        }
        return nil
    }
}

/// Announces the instance once the server listens, keeps the registration alive, and removes it first
/// at shutdown.
struct RegistrationService: Service {
    let discovery: any ServiceDiscovery
    let service: String
    let instanceID: String
    let host: String
    /// The shard of its service this instance owns, announced with it; nil when the service is not split.
    let shard: Int?
    let bound: BoundAddress
    let logger: Logger

    func run() async throws {
        guard let port = try? await cancelWhenGracefulShutdown({ await bound.wait() }) else { return }
        let instance = ServiceInstance(id: instanceID, service: service, host: host, port: port, shard: shard)
        // Keep trying: the service is useful the moment discovery answers.
        guard var registration = await register(instance) else { return }
        logger.info("serving", metadata: ["instance": "\(instanceID)", "address": "\(host):\(port)"])
        var failures = 0
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let current = registration
                try await cancelWhenGracefulShutdown { try await current.keepAlive() }
                failures = 0
            } catch let error as DiscoveryError where error.isLeaseExpired {
                // The lease is gone (etcd restarted without its data, or the process stalled past its TTL):
                // announce again under a new lease and keep that one alive from now on.
                logger.warning("lease lost; registering again")
                guard let renewed = await register(instance) else { break }
                registration = renewed
                logger.notice("registered again", metadata: ["instance": "\(instanceID)", "address": "\(host):\(port)"])
                failures = 0
            } catch is CancellationError {
                break
            } catch {
                failures += 1
                logger.warning("keep-alive failed; retrying", metadata: ["error": "\(error)", "failures": "\(failures)"])
                let delay = Self.backoff(failures)
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        }
        do {
            try await registration.deregister()
            logger.info("deregistered", metadata: ["instance": "\(instanceID)"])
        } catch {
            logger.warning("deregistration failed; the lease will expire", metadata: ["error": "\(error)"])
        }
    }

    /// Registers until discovery takes it, backing off between failures; nil only at shutdown. A failure
    /// never ends the service: it keeps serving whoever already knows its address.
    private func register(_ instance: ServiceInstance) async -> (any ServiceRegistration)? {
        var failures = 0
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                return try await discovery.register(instance)
            } catch {
                failures += 1
                logger.warning("registration failed; retrying", metadata: ["error": "\(error)", "failures": "\(failures)"])
                let delay = Self.backoff(failures)
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        }
        return nil
    }

    /// 0.5 s, 1 s, 2 s… up to 5 s: well inside a lease's TTL once discovery answers again.
    static func backoff(_ failures: Int) -> Duration {
        .milliseconds(min(5_000, 250 << min(max(failures, 1), 5)))
    }
}

/// Runs the shutdown hooks once graceful shutdown reaches it — after the server has drained.
struct ShutdownHooksService: Service {
    let hooks: [@Sendable () async throws -> Void]
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        for hook in hooks {
            do {
                try await hook()
            } catch {
                logger.error("shutdown step failed", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// Installs the JSON log handler once per process.
enum LoggingBootstrap {
    private static let done = NIOLockedValueBox(false)

    static func bootstrapOnce(_ configuration: ServiceConfiguration) {
        let first = done.withLockedValue { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        let level = configuration.logLevel
        if configuration.logFormat == "text" {
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardOutput(label: label)
                handler.logLevel = level
                return handler
            }
        } else {
            let service = configuration.name
            let instance = configuration.instanceID
            LoggingSystem.bootstrap { label in
                JSONLogHandler(label: label, service: service, instance: instance, level: level)
            }
        }
    }
}
