import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Where a Redis server listens and how the client talks to it.
public struct RedisConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Connections in the pool; commands are pipelined on them, so a few carry a lot.
    public var poolSize: Int
    /// How long one connect attempt may take.
    public var connectTimeout: Duration
    /// How long a command keeps trying to reach a server that refuses connections before it fails.
    public var reconnectWindow: Duration
    /// Sent with `AUTH` on every new connection when set (Redis's `requirepass`, or an ACL user's).
    public var password: String?
    /// The ACL user `password` belongs to; nil for `requirepass`.
    public var username: String?
    /// How long a reply may take before the server is taken for hung (the connection is closed and every
    /// command waiting on it fails with `RedisError.timedOut`); nil waits for ever. A caller's own
    /// deadline reaches Redis commands as task cancellation, which ends the wait at once.
    public var commandTimeout: Duration?
    /// Command batches that may wait for replies on one connection; more fail at once, unsent.
    public var maxPending: Int
    /// Talk to a Redis Cluster: `host:port` and `clusterNodes` are the nodes first asked for the slot map,
    /// and every command goes to the master of its key's slot (`ClusterRouter`).
    public var cluster: Bool
    /// Further nodes to ask for the slot map when `host:port` does not answer.
    public var clusterNodes: [RedisNode]

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        poolSize: Int = 4,
        connectTimeout: Duration = .seconds(2),
        reconnectWindow: Duration = .seconds(1),
        password: String? = nil,
        username: String? = nil,
        commandTimeout: Duration? = .seconds(3),
        maxPending: Int = 10_000,
        cluster: Bool = false,
        clusterNodes: [RedisNode] = []
    ) {
        self.host = host
        self.port = port
        self.poolSize = max(1, poolSize)
        self.connectTimeout = connectTimeout
        self.reconnectWindow = reconnectWindow
        self.password = password.flatMap { $0.isEmpty ? nil : $0 }
        self.username = username.flatMap { $0.isEmpty ? nil : $0 }
        self.commandTimeout = commandTimeout.flatMap { $0 > .zero ? $0 : nil }
        self.maxPending = max(1, maxPending)
        self.cluster = cluster
        self.clusterNodes = clusterNodes
    }
}

/// One TCP connection to Redis on a SwiftNIO event loop; replies are parsed by hiredis.
///
/// Safe to share: all it holds is the channel, and writes to a channel may come from any thread.
public final class RedisConnection: Sendable {
    let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
    }

    public var isActive: Bool { channel.isActive }

    /// Connects; `onPush` receives replies that answer no request (pub/sub messages).
    public static func connect(
        to configuration: RedisConfiguration,
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws -> RedisConnection {
        try await connectFuture(to: configuration, on: group, onPush: onPush).get()
    }

    static func connectFuture(
        to configuration: RedisConfiguration,
        on group: any EventLoopGroup,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) -> EventLoopFuture<RedisConnection> {
        let timeout = TimeAmount(configuration.connectTimeout)
        let commandTimeout = configuration.commandTimeout.map(TimeAmount.init)
        let maxPending = configuration.maxPending
        return ClientBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        RedisChannelHandler(onPush: onPush, timeout: commandTimeout, maxPending: maxPending))
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .map { RedisConnection(channel: $0) }
            .flatMapErrorThrowing { error in
                throw RedisError.connectFailed("\(configuration.host):\(configuration.port): \(error)")
            }
            .flatMap { connection in
                guard let password = configuration.password else { return connection.channel.eventLoop.makeSucceededFuture(connection) }
                let auth = configuration.username.map { RedisCommand("AUTH", $0, password) } ?? RedisCommand("AUTH", password)
                return connection.pipelineFuture([auth]).flatMapThrowing { replies in
                    if case .error(let message) = replies.first {
                        connection.channel.close(promise: nil)
                        throw RedisError.server("AUTH refused: \(message)")
                    }
                    return connection
                }
            }
    }

    /// Sends commands in one write and returns their replies in order. Error replies are values here, not throws.
    ///
    /// Stops waiting when the task is cancelled (a caller's deadline passed): it throws
    /// `CancellationError` at once, and the reply, when it comes, is read and dropped in its turn.
    /// `allowance` is time the server may take beyond the command timeout (a blocking read).
    public func pipeline(_ commands: [RedisCommand], allowance: Duration = .zero) async throws -> [RESPValue] {
        let future = pipelineFuture(commands, allowance: allowance)
        let answer = channel.eventLoop.makePromise(of: [RESPValue].self)
        let settled = NIOLockedValueBox(false)
        @Sendable func settle(_ result: Result<[RESPValue], any Error>) {
            let first = settled.withLockedValue { done in
                defer { done = true }
                return !done
            }
            if first { answer.completeWith(result) }
        }
        future.whenComplete(settle)
        return try await withTaskCancellationHandler {
            try await answer.futureResult.get()
        } onCancel: {
            settle(.failure(CancellationError()))
        }
    }

    /// The channel's event loop: work chained on `pipelineFuture` runs there without a thread hop.
    public var eventLoop: any EventLoop { channel.eventLoop }

    /// `pipeline` for code that lives on the event loop (SwiftNIO futures rather than async/await).
    public func pipelineFuture(_ commands: [RedisCommand], allowance: Duration = .zero) -> EventLoopFuture<[RESPValue]> {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let request = RedisRequest(commands: commands, promise: promise, allowance: TimeAmount(allowance))
        channel.writeAndFlush(request).whenFailure { error in promise.fail(Self.writeFailure(error)) }
        return promise.futureResult
    }

    /// A failed write as a `RedisError`: a channel already closed when the request reached it (its
    /// handler gone with it) wrote nothing, so the command did not run (`notSent`, which callers may
    /// send again); any other failure of the socket may have come after part of it was written.
    static func writeFailure(_ error: any Error) -> RedisError {
        if let error = error as? RedisError { return error }
        if let error = error as? ChannelError, error == .ioOnClosedChannel || error == .alreadyClosed {
            return .notSent("\(error)")
        }
        return .connectionClosed("the write failed: \(error)")
    }

    /// Sends one command; an error reply throws `RedisError.server`.
    @discardableResult
    public func send(_ command: RedisCommand, allowance: Duration = .zero) async throws -> RESPValue {
        let reply = try await pipeline([command], allowance: allowance)[0]
        if case .error(let message) = reply { throw RedisError.server(message) }
        return reply
    }

    /// Writes commands whose replies are pushes (SUBSCRIBE and friends on a subscriber connection).
    func sendWithoutReply(_ commands: [RedisCommand]) async throws {
        try await channel.writeAndFlush(RedisRequest(commands: commands, promise: nil))
    }

    public func close() async {
        try? await channel.close()
    }
}

extension TimeAmount {
    /// A `Duration` as a `TimeAmount`, saturating at the largest one.
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        self = overflow ? .nanoseconds(seconds < 0 ? .min : .max) : .nanoseconds(whole.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue)
    }
}
