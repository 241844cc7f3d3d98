import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A pool of pipelined connections to one Redis server — or, with `configuration.cluster`, to each master
/// of a Redis Cluster, every command sent to the master of its key's slot (`ClusterRouter`).
///
/// Commands from any number of tasks share the pool's connections: each command is written at once and
/// its reply matched in order, so no caller waits for a free connection. A connection that dropped
/// (the server restarted, the network blinked) is replaced on the next use; a command that finds the
/// server unreachable keeps trying for `reconnectWindow` before it fails. A command that was already
/// written when its connection dropped fails with `connectionClosed` — it may have run, so it is not
/// silently repeated.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    let group: any EventLoopGroup
    private let slots: [ConnectionSlot]
    let cluster: ClusterRouter?
    private let next = NIOLockedValueBox(0)
    private let logger: Logger

    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "hailstorm.redis")
    ) {
        self.configuration = configuration
        self.group = eventLoopGroup
        self.logger = logger
        if configuration.cluster {
            let seeds = [RedisNode(host: configuration.host, port: configuration.port)] + configuration.clusterNodes
            self.cluster = ClusterRouter(configuration: configuration, seeds: seeds, group: eventLoopGroup, logger: logger)
            self.slots = []
        } else {
            self.cluster = nil
            self.slots = (0..<configuration.poolSize).map { _ in
                ConnectionSlot(configuration: configuration, group: eventLoopGroup)
            }
        }
    }

    /// In a cluster, the redirections followed (`MOVED`, `ASK`) and slot-map refreshes made so far; nil
    /// for one server.
    public var clusterRedirections: (moved: Int, ask: Int, refreshes: Int)? { cluster?.redirections }

    /// Whether this client talks to a Redis Cluster.
    public var isCluster: Bool { cluster != nil }

    /// Sends one command to one node of the cluster as it is (no routing, no redirection); an error reply
    /// throws. For one server, `node` is ignored.
    @discardableResult
    public func send(_ command: RedisCommand, to node: RedisNode) async throws -> RESPValue {
        guard let cluster else { return try await send(command) }
        let reply = try await cluster.pipeline([command], to: node)[0]
        if case .error(let message) = reply { throw RedisError.server(message) }
        return reply
    }

    /// In a cluster, the masters serving slots now; one server alone is its own master.
    public func masters() async throws -> [RedisNode] {
        guard let cluster else { return [RedisNode(host: configuration.host, port: configuration.port)] }
        return try await cluster.masters()
    }

    private func slot() -> ConnectionSlot {
        let index = next.withLockedValue { value in
            value = (value &+ 1) % slots.count
            return value
        }
        return slots[index]
    }

    /// Sends commands in one write on one connection; replies come back in order, error replies as values.
    public func pipeline(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        if let cluster { return try await cluster.pipeline(commands) }
        let slot = self.slot()
        let deadline = ContinuousClock.now + configuration.reconnectWindow
        var backoff = Duration.milliseconds(20)
        while true {
            let connection: RedisConnection
            do {
                connection = try await slot.connection()
            } catch let error as RedisError where error.commandNotSent && ContinuousClock.now < deadline {
                logger.debug("redis unreachable, retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .milliseconds(250))
                continue
            }
            do {
                return try await connection.pipeline(commands)
            } catch let error as RedisError where error.commandNotSent && ContinuousClock.now < deadline {
                // The connection closed before the commands went out (Redis restarted a moment ago): they
                // did not run, so they go again on a new connection.
                logger.debug("redis connection closed before sending, retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: .milliseconds(5))
                continue
            }
        }
    }

    /// Sends commands in one write, as `pipeline`, for commands that must all succeed: the first error
    /// reply throws `RedisError.server`.
    @discardableResult
    public func sendAll(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        let replies = try await pipeline(commands)
        for reply in replies {
            if case .error(let message) = reply { throw RedisError.server(message) }
        }
        return replies
    }

    /// Sends one command; an error reply throws `RedisError.server`.
    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RESPValue {
        let reply = try await pipeline([command])[0]
        if case .error(let message) = reply { throw RedisError.server(message) }
        return reply
    }

    @discardableResult
    public func send(_ name: String, _ arguments: any RESPArgumentConvertible...) async throws -> RESPValue {
        try await send(RedisCommand(name, arguments))
    }

    /// A connection of its own, outside the pool, for blocking commands (`XREADGROUP BLOCK`, `BLPOP`)
    /// that would otherwise hold up everyone pipelined behind them.
    public func dedicatedConnection() async throws -> RedisConnection {
        try await connectAnywhere()
    }

    /// A connection for no key in particular: to the server, or in a cluster to a master that serves
    /// slots now, so a subscriber reconnecting after its node died finds a live one (classic pub/sub
    /// reaches every node of a cluster). A master that cannot be reached has the slot map read again.
    func connectAnywhere(onPush: (@Sendable (RESPValue) -> Void)? = nil) async throws -> RedisConnection {
        guard let cluster, let master = try await cluster.masters().randomElement() else {
            return try await RedisConnection.connect(to: configuration, on: group, onPush: onPush)
        }
        return try await connect(to: master, onPush: onPush)
    }

    /// A connection of its own to the server that holds `key` (in a cluster, its slot's master): for
    /// blocking reads of a stream.
    public func dedicatedConnection(forKey key: String) async throws -> RedisConnection {
        guard let cluster else { return try await dedicatedConnection() }
        return try await RedisConnection.connect(to: cluster.configuration(for: try await cluster.node(forKey: key)), on: group)
    }

    /// Closes every pooled connection.
    public func shutdown() async {
        await cluster?.shutdown()
        for slot in slots {
            await slot.close()
        }
    }
}

/// One pooled connection, replaced when it dies.
final class ConnectionSlot: Sendable {
    private enum State {
        case idle
        case connecting(EventLoopFuture<RedisConnection>)
        case connected(RedisConnection)
        case closed
    }

    private enum Next {
        case ready(RedisConnection)
        case wait(EventLoopFuture<RedisConnection>)
        case closed
    }

    private let state = NIOLockedValueBox(State.idle)
    private let configuration: RedisConfiguration
    private let group: any EventLoopGroup

    init(configuration: RedisConfiguration, group: any EventLoopGroup) {
        self.configuration = configuration
        self.group = group
    }

    /// The slot's connection, connecting when it has none. A connect that fails is tried once more
    /// before the error reaches the caller: a first connect through a container network's DNS and
    /// bridge can miss its deadline once while the network is still settling.
    func connection() async throws -> RedisConnection {
        do {
            return try await connectionAttempt()
        } catch let error as RedisError where error.isConnectFailure {
            try await Task.sleep(for: .milliseconds(100))
            return try await connectionAttempt()
        }
    }

    private func connectionAttempt() async throws -> RedisConnection {
        let next: Next = state.withLockedValue { state in
            switch state {
            case .connected(let connection) where connection.isActive:
                return .ready(connection)
            case .connecting(let future):
                return .wait(future)
            case .closed:
                return .closed
            case .idle, .connected:
                let future = RedisConnection.connectFuture(to: configuration, on: group)
                state = .connecting(future)
                return .wait(future)
            }
        }
        switch next {
        case .ready(let connection):
            return connection
        case .closed:
            throw RedisError.clientShutdown
        case .wait(let future):
            do {
                let connection = try await future.get()
                state.withLockedValue { state in
                    if case .connecting(let current) = state, current === future {
                        state = .connected(connection)
                    }
                }
                return connection
            } catch {
                state.withLockedValue { state in
                    if case .connecting(let current) = state, current === future {
                        state = .idle
                    }
                }
                throw error
            }
        }
    }

    func close() async {
        let current: RedisConnection? = state.withLockedValue { state in
            defer { state = .closed }
            if case .connected(let connection) = state { return connection }
            return nil
        }
        await current?.close()
    }
}
