import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// The first things a listener does with a connection, before any request reaches a service's routes:
/// a cap on the connections one peer address holds, and an answer to bytes that are not HTTP/1.1.
///
/// Hummingbird's plain HTTP/1.1 channel answers a request it cannot parse with a 400 and closes. Its
/// WebSocket-upgrade channel (the gateway's) does not: while it waits for the first request head to
/// decide on an upgrade, a parse error (a bare CR or LF, an oversized header, a TLS ClientHello, both
/// Content-Length and Transfer-Encoding) reaches no handler, and the connection stays open with no answer.
/// `MalformedRequestAnswer` closes that gap. The header-read timeout is Hummingbird's idle timeout
/// (`http.idle.timeout.seconds`): it runs from the moment a connection opens until a whole request head has
/// arrived, so a connection that sends half a header, or nothing, is closed when it passes.
struct EdgeChannel<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value

    let inner: Inner
    let connections: ConnectionsPerClient?
    let headerTimeout: TimeAmount
    /// Adds `MalformedRequestAnswer` behind the inner channel's HTTP decoder.
    let answersMalformedRequests: Bool
    /// Runs the connection's task (its requests, their handlers) on the connection's event loop.
    let handlersOnLoop: Bool

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        if let connections, let address = channel.remoteAddress?.ipAddress {
            guard connections.admit(address) else {
                logger.debug("connection refused: too many from one address", metadata: ["peer": "\(address)"])
                return channel.close().flatMapThrowing { throw TooManyConnections() }
            }
            channel.closeFuture.whenComplete { _ in connections.release(address) }
        }
        let answers = answersMalformedRequests
        let timeout = headerTimeout
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            try channel.pipeline.syncOperations.addHandler(HeaderReadTimeout(timeout: timeout), position: .first)
            if answers {
                try channel.pipeline.syncOperations.addHandler(MalformedRequestAnswer())
            }
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        guard handlersOnLoop else { return await inner.handle(value: value, logger: logger) }
        await withTaskExecutorPreference(LoopTaskExecutor(value.channel.eventLoop)) {
            await inner.handle(value: value, logger: logger)
        }
    }

    struct TooManyConnections: Error {}
}

/// Open connections per peer address, with a cap (`http.connections.per.client`): one client cannot hold
/// all of a listener's file descriptors.
final class ConnectionsPerClient: Sendable {
    let limit: Int
    private let open = Mutex<[String: Int]>([:])

    init(limit: Int) {
        self.limit = limit
    }

    /// Counts a new connection from `address`; false (and nothing counted) when it already holds `limit`.
    func admit(_ address: String) -> Bool {
        open.withLock { open in
            let count = open[address, default: 0]
            guard count < limit else { return false }
            open[address] = count + 1
            return true
        }
    }

    func release(_ address: String) {
        open.withLock { open in
            let count = open[address, default: 0]
            if count <= 1 { open[address] = nil } else { open[address] = count - 1 }
        }
    }

    var total: Int { open.withLock { $0.values.reduce(0, +) } }
}

/// Answers a request that cannot be parsed as HTTP/1.1 with a problem (400, or 431 when its header is too
/// large) and closes the connection, when nothing further down the pipeline would. Once a request part has
/// passed it, the connection belongs to the HTTP handlers behind it, which answer their own errors.
final class MalformedRequestAnswer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var requestSeen = false
    private var answered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        requestSeen = true
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !requestSeen, error is HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !answered else { return }
        answered = true
        let tooLarge = (error as? HTTPParserError) == .headerOverflow
        let status: HTTPResponseStatus = tooLarge ? .requestHeaderFieldsTooLarge : .badRequest
        let title = tooLarge ? "The request's header is too large" : "The request is not valid HTTP/1.1"
        let slug = tooLarge ? "header-too-large" : "malformed-request"
        let body = #"{"status":\#(status.code),"title":"\#(title)","type":"urn:hailstorm:problem:\#(slug)"}"#
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/problem+json")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

extension HTTPServerBuilder {
    /// Channels made by `makeChannel` (given the responder and the HTTP/1.1 settings: idle timeout and
    /// header limits), behind Hailstorm's edge (`EdgeChannel`).
    static func edge(
        http1: HTTP1Channel.Configuration, headerTimeout: Duration, connectionsPerClient: Int, answersMalformedRequests: Bool,
        handlersOnLoop: Bool,
        makeChannel: @escaping @Sendable (@escaping HTTPChannelHandler.Responder, HTTP1Channel.Configuration) -> any ServerChildChannel
    ) -> HTTPServerBuilder {
        let connections = connectionsPerClient > 0 ? ConnectionsPerClient(limit: connectionsPerClient) : nil
        let timeout = TimeAmount.nanoseconds(headerTimeout.nanosecondsValue)
        return HTTPServerBuilder { responder in
            func wrap(_ inner: some ServerChildChannel) -> any ServerChildChannel {
                EdgeChannel(
                    inner: inner, connections: connections, headerTimeout: timeout, answersMalformedRequests: answersMalformedRequests,
                    handlersOnLoop: handlersOnLoop)
            }
            return wrap(makeChannel(responder, http1))
        }
    }
}

/// Closes a connection whose first request head has not fully arrived within the timeout (slowloris:
/// half a header, or nothing at all). It reads the raw bytes in front of the HTTP decoder, so it works
/// the same for the WebSocket-upgrade channel, and removes itself once the head's blank line arrives;
/// the next requests on a kept-alive connection are Hummingbird's idle timeout's.
final class HeaderReadTimeout: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    /// The last byte that mattered was a line feed (carriage returns between do not count).
    private var afterLineFeed = false
    private var done = false

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            loopBound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !done {
            let buffer = unwrapInboundIn(data)
            for byte in buffer.readableBytesView {
                switch byte {
                case UInt8(ascii: "\n"):
                    if afterLineFeed { done = true }
                    afterLineFeed = true
                case UInt8(ascii: "\r"):
                    break
                default:
                    afterLineFeed = false
                }
                if done { break }
            }
        }
        context.fireChannelRead(data)
        if done {
            timer?.cancel()
            timer = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// Runs the jobs of the tasks that prefer it on one event loop: a task awaiting an answer that the loop
/// delivers resumes on that loop, in the same turn, instead of waking a thread of Swift's shared pool.
public final class LoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        eventLoop.enqueue(job)
    }
}
