import HailKit
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// Relays the common request on bytes, in front of the HTTP decoder: a relayed route (`ProxyRoute`), a
/// valid token, a deny-list and a request budget known here, an instance of the service listed. The
/// request's head is read off the wire (`WireRequest`), the call to the service is written straight into
/// one buffer (`Relay.call`), and the service's answer goes back to the client as one buffer with the
/// gateway's headers: no HTTP message is built on either side, no task, no timer. A token this instance
/// has not seen before is verified first (on the loop, after the read that brought it); one that does not verify goes to the
/// router, which refuses it with the reason.
///
/// Everything else passes, byte for byte, to the HTTP decoder and the router behind it, which answer it as
/// they always have (and refuse what must be refused: a 401, 403, 413 or 429 comes from there). A request
/// whose body does not match the endpoint, or whose retryable call fails, is passed on too; the router
/// checks and retries with backoff as usual, and the request budget counts it once. What the relay does
/// not frame itself (chunked bodies, a version other than HTTP/1.1, a line that is not strict HTTP/1.1, a
/// body over the limit, a WebSocket upgrade) passes with everything after it: from then on the router
/// has the connection.
///
/// Answers leave in the order the requests came: a request waits while a relayed answer is awaited, and
/// while the router owes answers (`RouterAnswers` counts them as they are written). Since the router does
/// not see the requests relayed here, this handler keeps the connection's idle timeout (the router's own
/// is off) and answers a shutdown's quiesce event itself when the router has never had the connection.
final class RelayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private enum InFlight {
        /// The request's token is being verified.
        case verifying
        /// Relayed; its answer is awaited. The request's bytes, should the router have to answer it.
        case awaiting(ByteBuffer)
    }

    /// A request head longer than this goes to the router, which answers 431.
    static let maxHeadBytes = 16 << 10
    /// Bytes held before the connection stops reading (a client pipelining many requests). Below it reads
    /// go on: stopping and restarting them costs two `epoll_ctl` calls per request.
    static let holdLimit = 64 << 10

    private let relay: Relay
    private let idleTimeout: TimeAmount?
    /// Bytes read and not yet relayed or passed on.
    private var unread: ByteBuffer?
    private var inFlight: InFlight?
    /// Requests passed to the router whose answer has not been written in full.
    private var routerAnswersOwed = 0
    /// Whether the router has had any request of this connection.
    private var routerUsed = false
    /// The router has the connection from here on: bytes pass untouched.
    private var passing = false
    private var passedSinceReadComplete = false
    private var readWanted = false
    private var quiescing = false
    private var quiesceHeld: Any?
    private var lastActivity = NIODeadline.now()
    private var idleCheck: Scheduled<Void>?

    init(relay: Relay, idleTimeout: TimeAmount?) {
        self.relay = relay
        self.idleTimeout = idleTimeout
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = .now()
        if passing, inFlight == nil, unread == nil {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        if unread == nil {
            unread = bytes
        } else {
            unread!.writeBuffer(&bytes)
        }
        handleUnread(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        passedSinceReadComplete = false
        context.fireChannelReadComplete()
    }

    /// Relays or passes on the requests read, in order, until one is awaited or incomplete.
    private func handleUnread(context: ChannelHandlerContext) {
        while inFlight == nil, var buffer = unread, buffer.readableBytes > 0 {
            if passing {
                unread = nil
                forward(buffer, context: context)
                break
            }
            // The router answers what it was given first.
            if routerAnswersOwed > 0 { break }
            switch WireRequest.frame(buffer, maxHeadBytes: Self.maxHeadBytes) {
            case .incomplete:
                return finishHandling(context: context)
            case .unframed:
                passing = true
                continue
            case .request(let head):
                if head.bodyLength > relay.bodyLimit || quiescing {
                    passing = true
                    continue
                }
                guard buffer.readableBytes >= head.totalLength else { return finishHandling(context: context) }
                let request = buffer.readSlice(length: head.totalLength)!
                unread = buffer.readableBytes > 0 ? buffer : nil
                if routerUsed {
                    admit(head, request, context: context)
                } else {
                    // A connection's first request goes to the router: the WebSocket upgrade behind the
                    // decoder decides on it, and until it has, the router's side of the connection is not
                    // set up (closing it then is an error there).
                    pass(request, upgrade: head.upgrade, context: context)
                }
            }
        }
        finishHandling(context: context)
    }

    private func finishHandling(context: ChannelHandlerContext) {
        if passedSinceReadComplete {
            passedSinceReadComplete = false
            context.fireChannelReadComplete()
        }
        if readWanted, !holding, context.channel.isActive {
            readWanted = false
            context.read()
        }
    }

    private func admit(_ head: WireRequest, _ request: ByteBuffer, context: ChannelHandlerContext, verified: AccessTokenClaims? = nil) {
        switch relay.admit(head, on: context.eventLoop, verified: verified) {
        case .relay(let relayed):
            send(relayed, request, body: request.getSlice(at: request.readerIndex + head.headLength, length: head.bodyLength)!, context: context)
        case .verify(let token) where verified == nil:
            inFlight = .verifying
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            relay.verify(token, on: context.eventLoop).whenSuccess { claims in
                let (handler, context) = loopBound.value
                handler.verified(head, request, claims: claims, context: context)
            }
        case .verify, .router:
            pass(request, upgrade: head.upgrade, context: context)
        }
    }

    /// The token of the request `head` was verified (`claims`) or refused (nil): it is relayed, or passed
    /// to the router; then the requests behind it are handled.
    private func verified(_ head: WireRequest, _ request: ByteBuffer, claims: AccessTokenClaims?, context: ChannelHandlerContext) {
        // The client left meanwhile: nothing to answer.
        guard case .verifying = inFlight, context.channel.isActive else { return }
        inFlight = nil
        if let claims, !quiescing {
            admit(head, request, context: context, verified: claims)
        } else {
            pass(request, upgrade: head.upgrade, context: context)
        }
        afterInFlight(context: context)
    }

    /// A request goes to the router: its bytes, as they came.
    private func pass(_ request: ByteBuffer, upgrade: Bool, context: ChannelHandlerContext) {
        routerAnswersOwed += 1
        routerUsed = true
        // After an upgrade the connection may no longer speak HTTP: the router keeps it.
        if upgrade { passing = true }
        forward(request, context: context)
    }

    private func forward(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        passedSinceReadComplete = true
        context.fireChannelRead(wrapInboundOut(bytes))
    }

    private func send(_ relayed: RelayedRequest, _ request: ByteBuffer, body: ByteBuffer, context: ChannelHandlerContext) {
        guard let call = relay.call(for: relayed, body: body, allocator: context.channel.allocator) else {
            relay.handedOver(relayed)
            pass(request, upgrade: false, context: context)
            return
        }
        inFlight = .awaiting(request)
        let loopBound = NIOLoopBound((self, context, relayed), eventLoop: context.eventLoop)
        call.answer.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context, relayed) = loopBound.value
            handler.answered(relayed, call: call, result: result, context: context)
        }
    }

    private func answered(_ relayed: RelayedRequest, call: RelayCall, result: Result<HTTP1Answer, any Error>, context: ChannelHandlerContext) {
        let outcome = relay.outcome(of: relayed, call: call, result: result, allocator: context.channel.allocator)
        guard case .awaiting(let request) = inFlight else { return }
        inFlight = nil
        // The client went away meanwhile: nothing to answer, nothing more to read.
        guard context.channel.isActive else { return }
        switch outcome {
        case .answer(let bytes):
            lastActivity = .now()
            context.writeAndFlush(wrapOutboundOut(.byteBuffer(bytes)), promise: nil)
        case .retryThroughRouter:
            pass(request, upgrade: false, context: context)
        }
        afterInFlight(context: context)
    }

    /// What waited for the request in flight: a shutdown's quiesce, the requests behind it.
    private func afterInFlight(context: ChannelHandlerContext) {
        if let event = quiesceHeld {
            quiesceHeld = nil
            quiesce(event, context: context)
            guard context.channel.isActive else { return }
        }
        handleUnread(context: context)
    }

    /// The router wrote the last part of an answer it owed.
    func routerAnswered(context: ChannelHandlerContext) {
        // (An answer the router writes for a request it was not handed, should there be one, must not
        // leave the count below zero: that would stop the relay for the connection.)
        routerAnswersOwed = max(0, routerAnswersOwed - 1)
        lastActivity = .now()
        if routerAnswersOwed == 0, unread != nil {
            // Handled on the next turn of the loop: the answer's end is still on its way out.
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let (handler, context) = loopBound.value
                guard handler.inFlight == nil, context.channel.isActive else { return }
                handler.handleUnread(context: context)
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        quiescing = true
        if inFlight != nil {
            quiesceHeld = event
        } else {
            quiesce(event, context: context)
        }
    }

    /// A shutdown began and no relayed request is in flight: a connection the router never had is closed
    /// here (nothing behind would close it); otherwise the router has it from now on, and closes it when
    /// it has answered what it owes.
    private func quiesce(_ event: Any, context: ChannelHandlerContext) {
        guard routerUsed else {
            context.close(promise: nil)
            return
        }
        passing = true
        context.fireUserInboundEventTriggered(event)
        handleUnread(context: context)
    }

    // MARK: Outbound

    /// Whether reading stops for now: requests wait behind one in flight, and enough bytes are held. (A
    /// request still arriving while none waits is read on: its head says it is within the body limit.)
    private var holding: Bool {
        !passing && (inFlight != nil || routerAnswersOwed > 0) && (unread?.readableBytes ?? 0) >= Self.holdLimit
    }

    func read(context: ChannelHandlerContext) {
        if holding {
            readWanted = true
        } else {
            context.read()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = .now()
        context.write(data, promise: promise)
    }

    // MARK: Idle timeout

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { scheduleIdleCheck(context: context, at: .now() + (idleTimeout ?? .zero)) }
    }

    func channelActive(context: ChannelHandlerContext) {
        scheduleIdleCheck(context: context, at: .now() + (idleTimeout ?? .zero))
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        if case .verifying = inFlight { inFlight = nil }
        context.fireChannelInactive()
    }

    /// Closes the connection once it has carried nothing for the idle timeout and owes no answer.
    private func scheduleIdleCheck(context: ChannelHandlerContext, at deadline: NIODeadline) {
        guard let idleTimeout, idleCheck == nil else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            handler.idleCheck = nil
            let now = NIODeadline.now()
            let busy = handler.routerAnswersOwed > 0 || handler.inFlight != nil
            if !busy, handler.lastActivity + idleTimeout <= now {
                context.close(promise: nil)
            } else {
                handler.scheduleIdleCheck(context: context, at: max(handler.lastActivity, now) + idleTimeout)
            }
        }
    }
}

/// Counts the router's answers for the `RelayHandler` in front: it sits behind the HTTP decoder, where
/// every answer the router (or the WebSocket upgrade, or the malformed-request answer) writes passes as
/// parts, and tells the relay when one has been written in full.
final class RouterAnswers: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let relay: RelayHandler
    private var relayContext: ChannelHandlerContext?
    private var upgraded = false

    init(relay: RelayHandler) {
        self.relay = relay
    }

    func handlerAdded(context: ChannelHandlerContext) {
        relayContext = try? context.pipeline.syncOperations.context(handler: relay)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        relayContext = nil
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .end:
            context.write(data, promise: promise)
            if let relayContext { relay.routerAnswered(context: relayContext) }
        case .head(let head) where head.status == .switchingProtocols:
            // The connection is a WebSocket's from here on: what is written after this head is not HTTP,
            // so this handler leaves once the head is flushed (a `writeAndFlush` flushes through it).
            upgraded = true
            context.write(data, promise: promise)
        case .head, .body:
            context.write(data, promise: promise)
        }
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
        if upgraded { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }
}

/// The gateway's HTTP/1.1 channel with the relay in front: `RelayHandler` first in the pipeline, reading
/// the bytes before the HTTP decoder, and `RouterAnswers` right behind the decoder.
struct RelayingChannel<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value

    let inner: Inner
    let relay: Relay
    let idleTimeout: TimeAmount?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let handler = RelayHandler(relay: relay, idleTimeout: idleTimeout)
            try pipeline.addHandler(handler, position: .first)
            let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(RouterAnswers(relay: handler), position: .after(decoder))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}
