import Contracts
import Dispatch
import HailKit
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Relays the common request on the connection's event loop, without the router: a relayed route
/// (`ProxyRoute`), a valid token, a deny-list and a request budget known here, an instance of the service
/// listed. It is checked, counted, sent on a keep-alive connection of the same loop and answered from the
/// service's bytes, with no task, no timer and no HTTP type conversions beyond the codec's. A token this
/// instance has not seen before is verified first (jwt-kit's verification is a task, the one hop off the
/// loop); one that does not verify goes to the router, which refuses it with the reason.
///
/// Everything else goes on to the router untouched, which answers it as it always has (and refuses what
/// must be refused: a 401, 403, 413 or 429 comes from there). A request relayed here whose body does not
/// match the endpoint, or whose retryable call fails, is handed to the router too, which checks and
/// retries with backoff as usual; the request budget counts it once.
///
/// Answers leave in the order the requests came: while a relayed answer is awaited, the next requests'
/// parts wait here (past a few, the connection stops reading); while the router owes answers, every request goes
/// to the router, which answers in order. Since the router does not see the requests relayed here, this
/// handler keeps the connection's idle timeout (the router's own is off) and holds a shutdown's quiesce
/// event until a relayed answer is out.
final class RelayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        case idle
        /// The current request goes to the router: its parts pass through.
        case passing
        /// The current request's token is being verified; its parts, and the next requests', wait.
        case verifying(HTTPRequest)
        /// The current request is relayed here: its body is gathered.
        case gathering(RelayedRequest)
        /// Relayed; its answer is awaited.
        case awaiting
    }

    private let relay: Relay
    private let idleTimeout: TimeAmount?
    private var state = State.idle
    /// Parts that arrived while an answer was awaited.
    private var held = CircularBuffer<HTTPRequestPart>()
    /// Requests handed to the router whose answer has not been written in full.
    private var routerAnswersOwed = 0
    private var readWanted = false
    /// A shutdown began: every request goes to the router, which closes the connection when it may.
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
        let part = unwrapInboundIn(data)
        if waiting {
            held.append(part)
            return
        }
        handle(part, context: context)
    }

    /// Whether arriving parts wait: a token is being verified, or a relayed answer is awaited.
    private var waiting: Bool {
        switch state {
        case .verifying, .awaiting: true
        case .idle, .passing, .gathering: false
        }
    }

    private func handle(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            let admission: Relay.Admission =
                !quiescing && routerAnswersOwed == 0 ? relay.admit(head, on: context.eventLoop) : .router
            switch admission {
            case .relay(let request):
                state = .gathering(request)
            case .verify(let token):
                state = .verifying(head)
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                relay.verify(token, on: context.eventLoop).whenSuccess { claims in
                    let (handler, context) = loopBound.value
                    handler.verified(head, claims: claims, context: context)
                }
            case .router:
                pass(head, context: context)
            }
        case (.gathering(let request), .body(let buffer)):
            if !request.gather(buffer, limit: relay.bodyLimit) {
                // Too large: the router answers the 413.
                handOver(request, context: context, ended: false)
                context.fireChannelRead(wrapInboundOut(part))
            }
        case (.gathering(let request), .end):
            state = .awaiting
            send(request, context: context)
        case (.passing, .end):
            state = .idle
            context.fireChannelRead(wrapInboundOut(part))
        default:
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    /// The current request goes to the router.
    private func pass(_ head: HTTPRequest, context: ChannelHandlerContext) {
        routerAnswersOwed += 1
        state = .passing
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// The token of the request `head` was verified (`claims`) or refused (nil): it is relayed, or handed to
    /// the router; then the parts that waited are handled.
    private func verified(_ head: HTTPRequest, claims: AccessTokenClaims?, context: ChannelHandlerContext) {
        // The client left meanwhile: nothing to answer.
        guard case .verifying = state, context.channel.isActive else { return }
        state = .idle
        if let claims, !quiescing, case .relay(let request) = relay.admit(head, on: context.eventLoop, verified: claims) {
            state = .gathering(request)
        } else {
            pass(head, context: context)
            // The router answers from here on; a shutdown may close the connection once it has.
            if let event = quiesceHeld {
                quiesceHeld = nil
                context.fireUserInboundEventTriggered(event)
            }
        }
        drain(context: context)
    }

    /// Hands a request taken for relaying to the router after all: its head and the body so far (and its
    /// end when it has ended). Its count against the budget is given back, since the router counts it.
    private func handOver(_ request: RelayedRequest, context: ChannelHandlerContext, ended: Bool) {
        relay.handedOver(request)
        routerAnswersOwed += 1
        context.fireChannelRead(wrapInboundOut(.head(request.head)))
        if let body = request.body { context.fireChannelRead(wrapInboundOut(.body(body))) }
        if ended {
            context.fireChannelRead(wrapInboundOut(.end(nil)))
            state = .idle
        } else {
            state = .passing
        }
    }

    private func send(_ request: RelayedRequest, context: ChannelHandlerContext) {
        guard let call = relay.call(for: request) else {
            handOver(request, context: context, ended: true)
            return
        }
        let loopBound = NIOLoopBound((self, context, request), eventLoop: context.eventLoop)
        call.answer.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context, request) = loopBound.value
            handler.answered(request, call: call, result: result, context: context)
        }
    }

    private func answered(
        _ request: RelayedRequest, call: RelayCall, result: Result<HTTP1Answer, any Error>, context: ChannelHandlerContext
    ) {
        let outcome = relay.outcome(of: request, call: call, result: result)
        // The client went away meanwhile: nothing to answer, nothing more to read.
        guard context.channel.isActive else { return }
        switch outcome {
        case .answer(let head, let body):
            lastActivity = .now()
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if let body { context.write(wrapOutboundOut(.body(body)), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            state = .idle
        case .retryThroughRouter:
            handOver(request, context: context, ended: true)
            context.fireChannelReadComplete()
        }
        if let event = quiesceHeld {
            quiesceHeld = nil
            context.fireUserInboundEventTriggered(event)
        }
        drain(context: context)
    }

    /// Handles the parts that waited, until one is relayed again; then reads on.
    private func drain(context: ChannelHandlerContext) {
        var handled = false
        while let part = held.popFirst() {
            handled = true
            handle(part, context: context)
            if waiting { break }
        }
        if handled { context.fireChannelReadComplete() }
        if held.count < Self.heldLimit, readWanted, context.channel.isActive {
            readWanted = false
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        quiescing = true
        switch state {
        case .verifying, .gathering, .awaiting:
            quiesceHeld = event
        case .idle, .passing:
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: Outbound

    /// Parts held before the connection stops reading (a client pipelining many requests). Below it reads
    /// go on: stopping and restarting them costs two `epoll_ctl` calls per request.
    private static let heldLimit = 16

    func read(context: ChannelHandlerContext) {
        if held.count >= Self.heldLimit {
            readWanted = true
        } else {
            context.read()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            // (An answer the router writes for a request it was not handed, should there be one, must
            // not leave the count below zero: that would stop the relay for the connection.)
            routerAnswersOwed = max(0, routerAnswersOwed - 1)
            lastActivity = .now()
        }
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
        switch state {
        case .gathering(let request):
            relay.abandoned(request)
            state = .idle
        case .verifying:
            state = .idle
        case .idle, .passing, .awaiting:
            break
        }
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
            var busy = handler.routerAnswersOwed > 0 || !handler.held.isEmpty
            if case .idle = handler.state {} else { busy = true }
            if !busy, handler.lastActivity + idleTimeout <= now {
                context.close(promise: nil)
            } else {
                handler.scheduleIdleCheck(context: context, at: max(handler.lastActivity, now) + idleTimeout)
            }
        }
    }
}
