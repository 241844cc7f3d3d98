import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The gateway's address (a plain `http://host:port` URL) and keep-alive HTTP/1.1 connections to it,
/// built for a load generator: a request is its bytes, written once (a scheduled request's bytes can be
/// made before the run), an answer is read by `ResponseReader` (status, body, keep-alive) and handed to
/// a closure on the loop that read it. No promise, task, header list or timer per request: with NIO's
/// HTTP codec and a future per call the generator spent about six times wrk's CPU per request, taken
/// from the two cores the measured system runs on.
///
/// Each event loop keeps its own connections, touched on that loop only. A request waits in order when
/// the loop's connections are all busy; one sweep per loop (every 25 ms while requests are out) answers
/// those past their deadline with status 0 and closes their connections.
struct GatewayLane: Sendable {
    let host: String
    let port: Int
    let hostHeader: String
    private let loops: [ObjectIdentifier: LaneLoop]
    private let group: any EventLoopGroup

    /// Nil for a URL that is not plain http with a host (those go through AsyncHTTPClient).
    init?(url: String, connections: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        guard let components = URLComponents(string: url), components.scheme == "http", let host = components.host,
            !host.isEmpty
        else { return nil }
        let port = components.port ?? 80
        self.host = host
        self.port = port
        self.hostHeader = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        self.group = group
        let all = Array(group.makeIterator())
        let perLoop = max(1, connections / max(1, all.count))
        var loops: [ObjectIdentifier: LaneLoop] = [:]
        for loop in all {
            loops[ObjectIdentifier(loop)] = LaneLoop(loop: loop, host: host, port: port, maxConnections: perLoop)
        }
        self.loops = loops
    }

    /// The bytes of a request to the gateway.
    func request(
        _ method: HTTPMethod, _ path: String, token: String, json: Data? = nil, idempotencyKey: String? = nil
    ) -> ByteBuffer {
        var head = "\(method.rawValue) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nAuthorization: Bearer \(token)\r\n"
        if let idempotencyKey { head += "Idempotency-Key: \(idempotencyKey)\r\n" }
        if json != nil { head += "Content-Type: application/json\r\n" }
        head += "Content-Length: \(json?.count ?? 0)\r\n\r\n"
        var buffer = ByteBuffer()
        buffer.reserveCapacity(head.utf8.count + (json?.count ?? 0))
        buffer.writeString(head)
        if let json { buffer.writeBytes(json) }
        return buffer
    }

    /// A request's head up to its `Content-Length` value, for requests whose bodies vary (the caller
    /// writes the length, a blank line and the body behind it).
    func head(_ method: HTTPMethod, _ path: String, token: String, json: Bool) -> ByteBuffer {
        var head = "\(method.rawValue) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nAuthorization: Bearer \(token)\r\n"
        if json { head += "Content-Type: application/json\r\n" }
        head += "Content-Length: "
        return ByteBuffer(string: head)
    }

    /// Sends `request` on a connection of `loop` and hands its answer to `done` on that loop. A transport
    /// failure or a passed deadline is a reply of status 0 whose body says what happened.
    func send(
        _ request: ByteBuffer, timeout: TimeAmount = .seconds(30), on loop: any EventLoop,
        _ done: @escaping @Sendable (LoadContext.Reply) -> Void
    ) {
        let home = loops[ObjectIdentifier(loop)] ?? loops[ObjectIdentifier(group.next())]!
        let call = LaneCall(request: request, deadline: .now() + timeout, done: done)
        if home.loop.inEventLoop {
            home.submit(call)
        } else {
            home.loop.execute { home.submit(call) }
        }
    }

    /// Opens `count` connections (at most the lane's), spread over its loops, before a run, as wrk does, so
    /// that the run's first second does not also measure the generator's own connects; returns once they
    /// are open or refused.
    func openAhead(_ total: Int) async {
        let count = (total + loops.count - 1) / max(1, loops.count)
        await withTaskGroup(of: Void.self) { group in
            for home in loops.values {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        home.loop.execute { home.openAhead(count) { continuation.resume() } }
                    }
                }
            }
        }
    }

    /// One request, awaited (on the calling task's loop when it runs on one).
    func call(
        _ method: HTTPMethod, _ path: String, token: String, json: Data?, idempotencyKey: String?, timeout: TimeAmount
    ) async -> LoadContext.Reply {
        let bytes = request(method, path, token: token, json: json, idempotencyKey: idempotencyKey)
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? group.next()
        return await withCheckedContinuation { continuation in
            send(bytes, timeout: timeout, on: loop) { continuation.resume(returning: $0) }
        }
    }
}

/// A request on its way: its bytes, its deadline, who gets the answer.
struct LaneCall {
    let request: ByteBuffer
    let deadline: NIODeadline
    let done: @Sendable (LoadContext.Reply) -> Void

    func fail(_ reason: String) {
        done(LoadContext.Reply(status: 0, bytes: ByteBuffer(string: reason)))
    }
}

/// The connections of one event loop to the gateway. Every member is touched on `loop` only.
final class LaneLoop: @unchecked Sendable {
    let loop: any EventLoop
    let host: String
    let port: Int
    let maxConnections: Int
    private var idle: [LaneConnection] = []
    /// Connections open or opening, and of those the ones opening.
    private var open = 0
    private var connecting = 0
    private var waiting = CircularBuffer<LaneCall>()
    private var connections: [ObjectIdentifier: LaneConnection] = [:]
    private var sweep: RepeatedTask?
    /// Connections `openAhead` still waits for, and what it does once they are open or refused.
    private var openingAhead: (left: Int, done: () -> Void)?

    init(loop: any EventLoop, host: String, port: Int, maxConnections: Int) {
        self.loop = loop
        self.host = host
        self.port = port
        self.maxConnections = maxConnections
    }

    /// The lane is done with (a scenario ended): its connections close on their loop, instead of staying
    /// open until the server drops them.
    deinit {
        let open = Array(connections.values)
        guard !open.isEmpty else { return }
        loop.execute { for connection in open { connection.close() } }
    }

    func submit(_ call: LaneCall) {
        if sweep == nil {
            sweep = loop.scheduleRepeatedTask(initialDelay: .milliseconds(25), delay: .milliseconds(25)) { [self] task in
                expire(task)
            }
        }
        while let connection = idle.popLast() {
            if connection.isOpen {
                send(call, on: connection)
                return
            }
        }
        waiting.append(call)
        connectIfNeeded()
    }

    /// Opens a connection when requests wait that the connections being opened will not take (while
    /// one opens, the requests due meanwhile wait for it instead of each opening its own).
    private func connectIfNeeded() {
        if open < maxConnections, connecting < waiting.count { connect() }
    }

    private func send(_ call: LaneCall, on connection: LaneConnection) {
        connection.send(call)
    }

    /// A connection answered and can take the next request.
    func released(_ connection: LaneConnection) {
        if let next = waiting.popFirst() {
            send(next, on: connection)
        } else {
            idle.append(connection)
        }
    }

    /// A connection closed: it no longer counts, and a waiting request may open a new one.
    func closed(_ connection: LaneConnection) {
        open -= 1
        connections[ObjectIdentifier(connection)] = nil
        if let index = idle.firstIndex(where: { $0 === connection }) { idle.remove(at: index) }
        connectIfNeeded()
    }

    /// Opens connections until `count` are open (at most `maxConnections`); `done` once they all are.
    func openAhead(_ count: Int, _ done: @escaping () -> Void) {
        let wanted = min(count, maxConnections) - open
        guard wanted > 0 else { return done() }
        openingAhead = (wanted, done)
        for _ in 0..<wanted { connect(ahead: true) }
    }

    private func connect(ahead: Bool = false) {
        open += 1
        connecting += 1
        let connection = LaneConnection(home: self)
        connections[ObjectIdentifier(connection)] = connection
        ClientBootstrap(group: loop)
            .connectTimeout(.seconds(2))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(connection) }
            }
            .connect(host: host, port: port)
            .whenComplete { [self] result in
                connecting -= 1
                if ahead, let (left, done) = openingAhead {
                    openingAhead = left > 1 ? (left - 1, done) : nil
                    if left == 1 { done() }
                }
                switch result {
                case .success:
                    released(connection)
                case .failure(let error):
                    open -= 1
                    connections[ObjectIdentifier(connection)] = nil
                    // The request it was opened for meets the refusal; with no connection left, so do the
                    // others waiting.
                    let reason = "no connection to \(host):\(port): \(error)"
                    waiting.popFirst()?.fail(reason)
                    if open == 0 {
                        while let next = waiting.popFirst() { next.fail(reason) }
                    }
                }
            }
    }

    /// Answers the requests past their deadline (closing their connections, so a late answer is never
    /// read as the next request's); stops itself when nothing is out.
    private func expire(_ task: RepeatedTask) {
        guard !waiting.isEmpty || connections.values.contains(where: \.isBusy) else {
            task.cancel()
            sweep = nil
            return
        }
        let now = NIODeadline.now()
        for connection in connections.values {
            connection.expire(now)
        }
        if waiting.contains(where: { $0.deadline <= now }) {
            let kept = waiting.filter { $0.deadline > now }
            let expired = waiting.filter { $0.deadline <= now }
            waiting = CircularBuffer(kept)
            for call in expired { call.fail("deadline exceeded waiting for a connection") }
        }
    }
}

/// One keep-alive connection: one request at a time, its answer read as it arrives.
final class LaneConnection: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Weak: a connection can outlive its lane (a scenario released while answers or closes are still on
    /// their way); it then closes instead of telling a lane that is gone.
    private weak var home: LaneLoop?
    private var context: ChannelHandlerContext?
    private var current: LaneCall?
    private var reader = ResponseReader()
    private var closing = false

    var isOpen: Bool { !closing && (context?.channel.isActive ?? false) }
    var isBusy: Bool { current != nil }

    init(home: LaneLoop) {
        self.home = home
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func send(_ call: LaneCall) {
        guard let context, isOpen else {
            call.fail("the connection closed")
            return
        }
        current = call
        context.writeAndFlush(wrapOutboundOut(call.request), promise: nil)
    }

    func expire(_ now: NIODeadline) {
        guard let call = current, call.deadline <= now else { return }
        current = nil
        call.fail("deadline exceeded")
        close()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard let call = current else {
            // An answer nobody asked for (or one past its deadline): the connection is out of step.
            return close()
        }
        switch reader.read(&bytes) {
        case .needMore:
            return
        case .invalid(let reason):
            current = nil
            call.fail("unreadable answer: \(reason)")
            close()
        case .answer(let status, let body, let keepAlive):
            current = nil
            call.done(LoadContext.Reply(status: status, bytes: body))
            if keepAlive && !reader.hasLeftover && !closing, let home {
                home.released(self)
            } else {
                close()
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        if let call = current {
            current = nil
            // Said apart in the report: a server that closed an idle connection as the request went out, or
            // one that stopped in the middle of its answer.
            let reading = reader.isReading
            switch reader.closed() {
            case .answer(let status, let body, _): call.done(LoadContext.Reply(status: status, bytes: body))
            case .invalid(let reason) where reading: call.fail(reason)
            default: call.fail("the connection closed before an answer")
            }
        }
        home?.closed(self)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let call = current {
            current = nil
            call.fail("connection error: \(error)")
        }
        close()
    }

    func close() {
        guard !closing, let context else { return }
        closing = true
        context.close(promise: nil)
    }
}
