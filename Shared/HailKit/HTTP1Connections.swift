import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Why a call over `HTTP1Connections` got no answer.
public enum HTTP1CallError: Error, Equatable, Sendable {
    /// The deadline passed before the whole answer arrived.
    case deadlineExceeded
    /// The connection could not be opened (the reason, for logs).
    case connectFailed(String)
    /// The connection closed (or failed) before the whole answer arrived.
    case connectionClosed
    /// The answer's body was larger than the client accepts.
    case answerTooLarge
    /// The calling task was cancelled.
    case cancelled
}

/// Keep-alive HTTP/1.1 connections from this process to the other services, on SwiftNIO, with as little
/// as possible between the caller and the socket.
///
/// Each event loop keeps its own connections per target (host and port), touched only on that loop, so
/// a call takes no lock: the caller's promise is handed to the loop (the caller's own loop when it names
/// one, so the request and its answer never cross threads), the request goes out on an idle connection
/// or a new one (at most `maxConnectionsPerLoop` per target; beyond that calls wait in order), and the
/// answer comes back as the status, the header block and the body's bytes, which the gateway relays
/// untouched. Requests go out as one buffer and answers are framed on bytes (`HTTP1Wire`): no request head
/// or header list is built for NIO's codec, and no header is turned into a string unless a caller asks for
/// it. Deadlines need
/// no timer per call: one timer per loop, set for the earliest deadline in flight, fails the calls past
/// their deadline and closes their connections (a late answer can never be read as the next call's). A
/// connection idle longer than `idleLimit` (shorter than the servers' keep-alive timeout) is closed
/// rather than reused, so no call is sent on a connection the server is closing.
public final class HTTP1Connections: Sendable {
    /// One per process, on NIO's shared event loops.
    public static let shared = HTTP1Connections(group: MultiThreadedEventLoopGroup.singleton)

    let group: any EventLoopGroup
    private let loops: [ObjectIdentifier: LoopConnections]

    public init(
        group: any EventLoopGroup,
        maxConnectionsPerLoop: Int = 64,
        idleLimit: TimeAmount = .seconds(10),
        connectTimeout: TimeAmount = .seconds(2),
        maxAnswerBytes: Int = 16 << 20
    ) {
        self.group = group
        let limits = LoopConnections.Limits(
            maxConnections: max(1, maxConnectionsPerLoop), idleLimit: idleLimit, connectTimeout: connectTimeout,
            maxAnswerBytes: maxAnswerBytes)
        var loops: [ObjectIdentifier: LoopConnections] = [:]
        for loop in group.makeIterator() {
            loops[ObjectIdentifier(loop)] = LoopConnections(loop: loop, limits: limits)
        }
        self.loops = loops
    }

    /// Sends `request` (the whole request as it goes on the wire, see `HTTP1Wire.request`) to `host:port`
    /// and returns the answer, or throws `HTTP1CallError`. `noBody`: it is a HEAD, so its answer has no
    /// body. `eventLoop`: the caller's loop (the server channel's), used when it belongs to this client's group.
    public func execute(
        host: String, port: Int, request: ByteBuffer, noBody: Bool = false, deadline: NIODeadline,
        eventLoop: (any EventLoop)? = nil
    ) async throws -> HTTP1Answer {
        let (connections, call) = makeCall(
            host: host, port: port, request: request, noBody: noBody, deadline: deadline, eventLoop: eventLoop)
        connections.loop.execute { connections.submit(call) }
        return try await withTaskCancellationHandler {
            try await call.promise.futureResult.get()
        } onCancel: {
            connections.loop.execute { connections.cancel(call) }
        }
    }

    /// `execute` for a caller that is itself a channel handler: no task, and when `eventLoop` belongs to
    /// this client's group the call is submitted and answered on it, in the caller's own turn of the loop.
    /// The future fails with `HTTP1CallError`.
    public func submit(
        host: String, port: Int, request: ByteBuffer, noBody: Bool = false, deadline: NIODeadline, eventLoop: any EventLoop
    ) -> EventLoopFuture<HTTP1Answer> {
        let (connections, call) = makeCall(
            host: host, port: port, request: request, noBody: noBody, deadline: deadline, eventLoop: eventLoop)
        if connections.loop.inEventLoop {
            connections.submit(call)
        } else {
            connections.loop.execute { connections.submit(call) }
        }
        return call.promise.futureResult
    }

    private func makeCall(
        host: String, port: Int, request: ByteBuffer, noBody: Bool, deadline: NIODeadline, eventLoop: (any EventLoop)?
    ) -> (LoopConnections, PendingCall) {
        let connections = eventLoop.flatMap { loops[ObjectIdentifier($0)] } ?? loops[ObjectIdentifier(group.next())]!
        let call = PendingCall(
            target: Target(host: host, port: port), request: request, noBody: noBody, deadline: deadline,
            promise: connections.loop.makePromise(of: HTTP1Answer.self))
        return (connections, call)
    }
}

struct Target: Hashable, Sendable {
    var host: String
    var port: Int
}

/// One call on its way: created by the caller, then touched only on its loop.
final class PendingCall: @unchecked Sendable {
    let target: Target
    /// The request's bytes, and whether its answer has no body (a HEAD).
    let request: ByteBuffer
    let noBody: Bool
    let deadline: NIODeadline
    let promise: EventLoopPromise<HTTP1Answer>
    /// Answered, failed or cancelled: nothing more happens to it.
    var finished = false
    /// The connection carrying it, once sent.
    var connection: HTTP1ClientConnection?

    init(target: Target, request: ByteBuffer, noBody: Bool, deadline: NIODeadline, promise: EventLoopPromise<HTTP1Answer>) {
        self.target = target
        self.request = request
        self.noBody = noBody
        self.deadline = deadline
        self.promise = promise
    }

    func succeed(_ answer: HTTP1Answer) {
        guard !finished else { return }
        finished = true
        promise.succeed(answer)
    }

    func fail(_ error: HTTP1CallError) {
        guard !finished else { return }
        finished = true
        promise.fail(error)
    }
}

/// The connections of one event loop, per target. Every member is touched on `loop` only.
final class LoopConnections: @unchecked Sendable {
    struct Limits {
        var maxConnections: Int
        var idleLimit: TimeAmount
        var connectTimeout: TimeAmount
        var maxAnswerBytes: Int
    }

    let loop: any EventLoop
    let limits: Limits
    private var pools: [Target: TargetPool] = [:]
    /// The timer set for the earliest deadline of the calls in flight, and when it fires.
    private var expiry: (at: NIODeadline, timer: Scheduled<Void>)?
    /// Calls submitted and not yet finished.
    private var active: [ObjectIdentifier: PendingCall] = [:]

    init(loop: any EventLoop, limits: Limits) {
        self.loop = loop
        self.limits = limits
    }

    func submit(_ call: PendingCall) {
        guard !call.finished else { return }
        if call.deadline <= .now() { return call.fail(.deadlineExceeded) }
        active[ObjectIdentifier(call)] = call
        call.promise.futureResult.whenComplete { [self] _ in active[ObjectIdentifier(call)] = nil }
        pool(call.target).submit(call)
        if call.deadline != .distantFuture, expiry.map({ call.deadline < $0.at }) ?? true { expire(at: call.deadline) }
    }

    func cancel(_ call: PendingCall) {
        guard !call.finished else { return }
        call.fail(.cancelled)
        // Its answer may still come: the connection cannot carry another call.
        call.connection?.close()
    }

    private func pool(_ target: Target) -> TargetPool {
        if let pool = pools[target] { return pool }
        let pool = TargetPool(target: target, loop: loop, limits: limits)
        pools[target] = pool
        return pool
    }

    /// Sets the one timer for `deadline` (replacing a later one; both are on this loop, so cancelling
    /// wakes nothing). Calls finish in milliseconds and their deadlines are seconds away, so it is set
    /// about once per deadline's length while calls are in flight, and not at all when none is: a sweep
    /// every 25 ms while anything was in flight woke a busy service's loop forty times a second.
    private func expire(at deadline: NIODeadline) {
        expiry?.timer.cancel()
        let timer = loop.scheduleTask(deadline: deadline) { [self] in
            expiry = nil
            expireCalls()
        }
        expiry = (deadline, timer)
    }

    /// Fails the calls past their deadline, and sets the timer for the earliest deadline still to come.
    private func expireCalls() {
        let now = NIODeadline.now()
        var earliest: NIODeadline?
        for call in active.values {
            if call.deadline <= now {
                call.fail(.deadlineExceeded)
                call.connection?.close()
            } else if call.deadline != .distantFuture, earliest.map({ call.deadline < $0 }) ?? true {
                earliest = call.deadline
            }
        }
        if let earliest { expire(at: earliest) }
    }
}

/// The connections of one loop to one target: idle ones (most recently used last), a count of all open
/// or opening, and the calls waiting for one.
final class TargetPool: @unchecked Sendable {
    let target: Target
    let loop: any EventLoop
    let limits: LoopConnections.Limits
    private var idle: [HTTP1ClientConnection] = []
    private var open = 0
    private var waiting = CircularBuffer<PendingCall>()

    init(target: Target, loop: any EventLoop, limits: LoopConnections.Limits) {
        self.target = target
        self.loop = loop
        self.limits = limits
    }

    func submit(_ call: PendingCall) {
        let now = NIODeadline.now()
        while let connection = idle.popLast() {
            if connection.isOpen, now - connection.idleSince < limits.idleLimit {
                connection.send(call)
                return
            }
            connection.close()
        }
        if open < limits.maxConnections {
            connect(for: call)
        } else {
            waiting.append(call)
        }
    }

    /// A connection finished its call and can take another.
    func release(_ connection: HTTP1ClientConnection) {
        while let next = waiting.popFirst() {
            if !next.finished {
                connection.send(next)
                return
            }
        }
        connection.idleSince = .now()
        idle.append(connection)
    }

    /// A connection closed: it no longer counts, and a waiting call may open a new one.
    func closed(_ connection: HTTP1ClientConnection) {
        open -= 1
        if let index = idle.firstIndex(where: { $0 === connection }) { idle.remove(at: index) }
        while let next = waiting.popFirst() {
            if !next.finished {
                connect(for: next)
                return
            }
        }
    }

    private func connect(for call: PendingCall) {
        open += 1
        let limits = self.limits
        let connection = HTTP1ClientConnection(pool: self, maxAnswerBytes: limits.maxAnswerBytes)
        ClientBootstrap(group: loop)
            .connectTimeout(limits.connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
            .connect(host: target.host, port: target.port)
            .whenComplete { [self] result in
                switch result {
                case .success:
                    if call.finished {
                        release(connection)
                    } else {
                        connection.send(call)
                    }
                case .failure(let error):
                    open -= 1
                    let failure = HTTP1CallError.connectFailed("\(target.host):\(target.port): \(error)")
                    call.fail(failure)
                    // With no connection left to the target, the calls waiting behind it would meet the
                    // same refusal: fail them now, not one by one. With others open, they wait for those.
                    if open == 0 {
                        while let next = waiting.popFirst() { next.fail(failure) }
                    }
                }
            }
    }
}

/// One keep-alive connection: sends one call at a time and frames its answer (`HTTP1AnswerParser`).
final class HTTP1ClientConnection: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private unowned let pool: TargetPool
    private var parser: HTTP1AnswerParser
    private var context: ChannelHandlerContext?
    private var current: PendingCall?
    /// Bytes read that do not yet complete what the parser waits for (a head, a chunk's size line).
    private var unread: ByteBuffer?
    var idleSince = NIODeadline.now()
    /// Closed by this side, or seen closing: it takes no more calls.
    private var closing = false
    /// Counted out of its pool (once).
    private var countedOut = false

    var isOpen: Bool { !closing && (context?.channel.isActive ?? false) }

    init(pool: TargetPool, maxAnswerBytes: Int) {
        self.pool = pool
        self.parser = HTTP1AnswerParser(maxBodyBytes: maxAnswerBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func send(_ call: PendingCall) {
        guard let context, isOpen else {
            call.fail(.connectionClosed)
            return
        }
        current = call
        call.connection = self
        context.writeAndFlush(wrapOutboundOut(call.request), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var earlier = unread {
            unread = nil
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        guard let call = current else {
            // An answer nobody asked for: the connection is out of step.
            close()
            return
        }
        let read: (HTTP1Answer, keepAlive: Bool)?
        do {
            read = try parser.read(&bytes, noBody: call.noBody)
        } catch HTTP1AnswerParser.Failure.tooLarge {
            call.fail(.answerTooLarge)
            close()
            return
        } catch {
            close()
            return
        }
        guard let (answer, keepAlive) = read else {
            if bytes.readableBytes > 0 { unread = bytes }
            return
        }
        current = nil
        call.connection = nil
        // Bytes after the answer were not asked for either.
        let reusable = keepAlive && !call.finished && bytes.readableBytes == 0
        call.succeed(answer)
        if reusable {
            pool.release(self)
        } else {
            close()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        // An answer whose body runs to the close is whole now.
        if let call = current, let answer = parser.closed() {
            call.succeed(answer)
        }
        current?.fail(.connectionClosed)
        current = nil
        // Only a connection that was active goes inactive; one that never connected was counted out by
        // the failed connect.
        if !countedOut {
            countedOut = true
            pool.closed(self)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        current?.fail(.connectionClosed)
        current = nil
        close()
    }

    func close() {
        guard !closing, let context else { return }
        closing = true
        current?.fail(.connectionClosed)
        current = nil
        context.close(promise: nil)
    }
}
