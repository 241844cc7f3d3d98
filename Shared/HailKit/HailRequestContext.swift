import Contracts
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import W3CTraceContext

/// Who made a request, as the gateway learned it from a verified access token.
public struct Identity: Sendable, Hashable {
    public var userID: String
    public var role: Role
    /// The token's `jti`, for the deny-list.
    public var tokenID: String
    /// The sign-in session the token belongs to (users' tokens), for the deny-list of ended sessions.
    public var sessionID: String?

    public init(userID: String, role: Role, tokenID: String, sessionID: String? = nil) {
        self.userID = userID
        self.role = role
        self.tokenID = tokenID
        self.sessionID = sessionID
    }
}

/// The request context of every Hailstorm service: what middleware learned about a request, so that
/// handlers never parse headers again.
public struct HailRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's `X-Request-ID`, or one made here; echoed in the answer and in every log line.
    public var requestID: String
    /// This hop of the W3C trace: the caller's trace id with a span id of our own.
    public var trace: TraceContext
    /// When the caller stops waiting; work past it is cancelled and answered 504.
    public var deadline: ContinuousClock.Instant?
    /// Set by authentication middleware.
    public var identity: Identity?
    /// The body limit, set from configuration by `BodyLimitMiddleware`.
    public var maxUploadSize: Int
    /// The peer address of the connection.
    public let remoteAddress: String?
    /// The client's address, for per-client limits before sign-in: the peer, unless the gateway trusts
    /// proxies in front of it (`gateway.proxy.hops`), which say who their client was.
    public var clientAddress: String?
    /// The event loop of the request's connection: calls made for it go out on connections of the same
    /// loop, so the request, the call and both answers stay on one thread.
    public let eventLoop: any EventLoop

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.requestID = ""
        // A trace of its own, not sampled: only a caller's sampled `traceparent` asks every service for its
        // "request answered" line (`TraceLines`).
        self.trace = TraceContext(traceID: .random(), spanID: .random(), flags: [], state: .init())
        self.deadline = nil
        self.identity = nil
        self.maxUploadSize = 1 << 20
        self.remoteAddress = source.channel.remoteAddress?.ipAddress
        self.clientAddress = remoteAddress
        self.eventLoop = source.channel.eventLoop
    }

    /// The request's id: the caller's `X-Request-ID` when it sends a usable one (1–128 characters), a new
    /// one otherwise.
    public static func requestID(of headers: HTTPFields) -> String {
        requestID(from: headers[HailHeaders.requestID])
    }

    /// `requestID(of:)` from the header's value.
    public static func requestID(from value: String?) -> String {
        value.flatMap { $0.count <= 128 && !$0.isEmpty ? $0 : nil } ?? RandomID.hex(20)
    }

    /// This hop of the caller's W3C trace (same trace, a span of our own whose parent is the caller's);
    /// nil when the caller sends none, or one that does not parse.
    public static func trace(of headers: HTTPFields) -> TraceContext? {
        guard let parent = headers[HailHeaders.traceParent],
            let trace = try? TraceContext(traceParentHeaderValue: parent, traceStateHeaderValue: headers[HailHeaders.traceState])
        else { return nil }
        return TraceContext(traceID: trace.traceID, spanID: .random(), flags: trace.flags, state: trace.state)
    }

    /// What a call to another service on behalf of this request carries along.
    public var callContext: CallContext {
        CallContext(requestID: requestID, trace: trace, deadline: deadline, eventLoop: eventLoop)
    }

    /// The authenticated identity, or a 401 problem.
    public func requireIdentity() throws -> Identity {
        guard let identity else { throw Problem.unauthorized("Sign in and send the access token as a Bearer token") }
        return identity
    }

    /// The authenticated identity when it has one of `roles`; 401 without one, 403 with another role.
    public func requireRole(_ roles: Role...) throws -> Identity {
        try requireRole(roles)
    }

    /// `requireRole` for a list of roles.
    public func requireRole(_ roles: [Role]) throws -> Identity {
        let identity = try requireIdentity()
        guard roles.contains(identity.role) else {
            let names = roles.map(\.rawValue).joined(separator: " or ")
            throw Problem.forbidden("This needs the \(names) role; you are signed in as \(identity.role.rawValue)")
        }
        return identity
    }
}

/// The parts of an incoming request that outgoing calls propagate.
public struct CallContext: Sendable {
    public var requestID: String?
    public var trace: TraceContext?
    public var deadline: ContinuousClock.Instant?
    /// Makes a non-idempotent call safe to retry; the callee answers a repeat with the first result.
    public var idempotencyKey: String?
    /// The loop the caller's own request is served on, if any: calls go out on connections of that loop.
    public var eventLoop: (any EventLoop)?

    public init(
        requestID: String? = nil,
        trace: TraceContext? = nil,
        deadline: ContinuousClock.Instant? = nil,
        idempotencyKey: String? = nil,
        eventLoop: (any EventLoop)? = nil
    ) {
        self.requestID = requestID
        self.trace = trace
        self.deadline = deadline
        self.idempotencyKey = idempotencyKey
        self.eventLoop = eventLoop
    }

    /// A call with nothing inherited: background work, tests.
    public static let none = CallContext()
}
