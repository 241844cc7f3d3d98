import Contracts
import Discovery
import Dispatch
import Foundation
import HailKit
import HTTPTypes
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import Synchronization
import W3CTraceContext

/// What every connection's `RelayHandler` shares: the relayed routes, and the gateway's token cache,
/// deny-list, request budgets and service client, as the router's middleware uses them.
final class Relay: Sendable {
    let routes: RelayRoutes
    let tokens: AccessTokens
    let revocations: Revocations
    let budgets: RequestBudgets
    let clients: ServiceClient
    let bodyLimit: Int
    /// Time a relayed call may take: the client's timeout or the gateway's request timeout, the sooner.
    let timeout: Duration
    let serverName: String
    let logger: Logger
    /// The request budget's limit, as the header states it.
    private let limitText: String
    private let metrics = RelayMetrics()

    init(
        routes: [ProxyRoute], tokens: AccessTokens, revocations: Revocations, budgets: RequestBudgets, clients: ServiceClient,
        bodyLimit: Int, requestTimeout: Duration?, serverName: String, logger: Logger
    ) {
        self.routes = RelayRoutes(routes)
        self.tokens = tokens
        self.revocations = revocations
        self.budgets = budgets
        self.clients = clients
        self.bodyLimit = bodyLimit
        self.timeout = min(clients.configuration.timeout, requestTimeout ?? clients.configuration.timeout)
        self.serverName = serverName
        self.logger = logger
        self.limitText = String(budgets.limit)
    }

    /// Whether a request is relayed here.
    enum Admission {
        /// Relayed: its body is gathered, then it is sent.
        case relay(RelayedRequest)
        /// Relayable, but this instance has not verified its token yet: `verify` it, then admit again.
        case verify(token: String)
        /// The router answers it.
        case router
    }

    /// `.relay` when this instance can relay the request itself: a relayed route, no `Expect`,
    /// `Connection` or deadline of the caller's, a body within the limit, a verified token (`verified`, or
    /// one remembered) whose role may call the route and that is known not to be signed out, and the
    /// caller's budget known here and not spent (it is counted now).
    func admit(_ head: HTTPRequest, on eventLoop: any EventLoop, verified: AccessTokenClaims? = nil) -> Admission {
        guard let path = head.path, let (route, parameter) = routes.match(head.method, path) else { return .router }
        // One pass over the header for what matters here.
        var authorization: String? = nil
        var idempotencyKey: String? = nil
        var requestID: String? = nil
        var traced = false
        for field in head.headerFields {
            switch field.name {
            case .authorization: authorization = field.value
            case HailHeaders.idempotencyKey: idempotencyKey = field.value
            case HailHeaders.requestID: requestID = field.value
            case HailHeaders.traceParent: traced = true
            case .contentLength:
                guard let bytes = Int(field.value), bytes <= bodyLimit else { return .router }
            case .expect, .connection, HailHeaders.deadline:
                return .router
            default:
                break
            }
        }
        guard let authorization, authorization.hasPrefix("Bearer ") else { return .router }
        let token = String(authorization.dropFirst(7))
        let remembered = tokens.remembered(token)
        guard let claims = verified ?? remembered?.claims else { return .verify(token: token) }
        let identity = claims.identity
        guard route.route.allows(identity.role), revocations.isRevoked(identity) == false else { return .router }
        let client = "user:" + identity.userID
        guard case .allowed(let remaining) = budgets.take(client) else { return .router }
        let id: String? =
            switch route.route.id {
            case .path: parameter.map(String.init)
            case .caller: identity.userID
            case .none: nil
            }
        metrics.began(head.method)
        return .relay(RelayedRequest(
            head: head, route: route, calleeID: id, client: client, remaining: remaining, authorization: authorization,
            token: token, claims: claims, remembered: remembered, idempotencyKey: idempotencyKey,
            requestID: HailRequestContext.requestID(from: requestID),
            trace: traced ? HailRequestContext.trace(of: head.headerFields) : nil, eventLoop: eventLoop))
    }

    /// The token's claims, verified in a task on Swift's shared pool (an ES256 check on the one event loop
    /// made that loop a flash sale's bottleneck), delivered on
    /// `eventLoop`; nil when the token is not valid (the router then refuses it, with the reason). A valid
    /// token is remembered, as the router's verification remembers it.
    func verify(_ token: String, on eventLoop: any EventLoop) -> EventLoopFuture<AccessTokenClaims?> {
        let promise = eventLoop.makePromise(of: AccessTokenClaims?.self)
        let tokens = tokens
        Task {
            promise.succeed(try? await tokens.verify(token))
        }
        return promise.futureResult
    }

    /// The client left before the whole request arrived: it is no longer in flight.
    func abandoned(_ request: RelayedRequest) {
        metrics.ended(request.head.method)
    }

    /// The request goes to the router after all: it counts it again.
    func handedOver(_ request: RelayedRequest) {
        budgets.giveBack(request.client)
        metrics.ended(request.head.method)
    }

    /// The call for a whole request; nil when its body does not match the endpoint or no instance of the
    /// service is listed (the router then answers, with the reason).
    func call(for request: RelayedRequest) -> RelayCall? {
        let route = request.route.route
        var headers: HTTPFields = [.authorization: request.authorization]
        let attestation =
            if let remembered = request.remembered {
                tokens.attestation(for: request.token, remembered: remembered, to: route.service)
            } else {
                tokens.attestation(for: request.token, claims: request.claims, to: route.service)
            }
        if let attestation {
            headers[HailHeaders.verifiedToken] = attestation
        }
        if let key = request.idempotencyKey { headers[HailHeaders.idempotencyKey] = key }
        if let checkBody = route.checkBody {
            do { try checkBody(request.body ?? ByteBuffer()) } catch { return nil }
            headers[.contentType] = "application/json"
        }
        guard let instance = clients.pickListed(route.service) else { return nil }
        let callContext = CallContext(requestID: request.requestID, trace: request.trace, eventLoop: request.eventLoop)
        let head = ServiceClient.head(
            method: route.calleeMethod, path: route.calleePath(request.calleeID), headers: headers, instance: instance,
            context: callContext, remaining: timeout, bodyLength: route.checkBody == nil ? 0 : request.body?.readableBytes ?? 0)
        clients.started(instance)
        let answer = clients.connections.submit(
            host: instance.host, port: instance.port, head: head, body: route.checkBody == nil ? nil : request.body,
            deadline: .now() + .nanoseconds(timeout.nanosecondsValue), eventLoop: request.eventLoop)
        return RelayCall(instance: instance, answer: answer)
    }

    enum Outcome {
        /// Write this answer.
        case answer(HTTPResponse, ByteBuffer?)
        /// A retryable call failed: the router tries again, with backoff.
        case retryThroughRouter
    }

    /// What to do with a call's result, as `ServiceClient.send` and the router's relay would.
    func outcome(of request: RelayedRequest, call: RelayCall, result: Result<HTTP1Answer, any Error>) -> Outcome {
        let route = request.route.route
        let retryable = route.isIdempotent || request.idempotencyKey != nil
        let relayed: RelayedAnswer
        do {
            switch result {
            case .success(let answer):
                let code = Int(answer.head.status.code)
                let unavailable = code == 502 || code == 503 || code == 504
                clients.finished(call.instance, service: route.service, outcome: unavailable ? .unavailable : .ok)
                if unavailable, retryable {
                    handedOver(request)
                    return .retryThroughRouter
                }
                relayed = try RelayedAnswer(
                    status: code, header: { answer.head.headers.first(name: $0.rawName) }, body: answer.body)
            case .failure(let error):
                if let error = error as? HTTP1CallError, error == .deadlineExceeded {
                    clients.finished(call.instance, service: route.service, outcome: .deadline)
                    throw Problem.deadlineExceeded("A service behind this one did not answer within the deadline")
                }
                clients.finished(call.instance, service: route.service, outcome: .unreachable)
                if retryable {
                    handedOver(request)
                    return .retryThroughRouter
                }
                throw Problem(
                    .badGateway, slug: "unreachable", title: "A service could not be reached",
                    detail: "A service behind this one could not be reached; try again")
            }
        } catch {
            let problem = error as? Problem ?? .internalError
            logger.error(
                "request failed",
                metadata: [
                    "request_id": "\(request.requestID)", "path": "\(request.head.path ?? "")", "status": "\(problem.status.code)",
                    "error": "\(problem)",
                ])
            var headers = problem.headers
            headers[.contentType] = "application/problem+json"
            relayed = RelayedAnswer(status: problem.status, headers: headers, body: problem.body(requestID: request.requestID))
        }
        var fields = relayed.headers
        if let body = relayed.body { fields[.contentLength] = String(body.readableBytes) }
        fields[RateLimitMiddleware.limitHeader] = limitText
        fields[RateLimitMiddleware.remainingHeader] = String(max(0, request.remaining))
        fields[HailHeaders.requestID] = request.requestID
        fields[.date] = HTTPDate.now()
        fields[.server] = serverName
        metrics.answered(request, status: relayed.status)
        return .answer(HTTPResponse(status: relayed.status, headerFields: fields), relayed.body)
    }
}

/// A request taken for relaying.
final class RelayedRequest {
    let head: HTTPRequest
    let route: RelayRoutes.Entry
    /// The callee's `{id}`.
    let calleeID: String?
    /// The budget it was counted against, and what that budget has left.
    let client: String
    let remaining: Int
    /// The caller's `Authorization` and `Idempotency-Key`, passed on.
    let authorization: String
    /// The token (the `Authorization` less `Bearer `) and its claims, as verified here; its entry among
    /// the remembered tokens, when it is one.
    let token: String
    let claims: AccessTokenClaims
    let remembered: VerifiedToken?
    let idempotencyKey: String?
    let requestID: String
    let trace: TraceContext?
    let eventLoop: any EventLoop
    let started = DispatchTime.now().uptimeNanoseconds
    private(set) var body: ByteBuffer?

    init(
        head: HTTPRequest, route: RelayRoutes.Entry, calleeID: String?, client: String, remaining: Int, authorization: String,
        token: String, claims: AccessTokenClaims, remembered: VerifiedToken?, idempotencyKey: String?, requestID: String,
        trace: TraceContext?, eventLoop: any EventLoop
    ) {
        self.authorization = authorization
        self.token = token
        self.claims = claims
        self.remembered = remembered
        self.idempotencyKey = idempotencyKey
        self.head = head
        self.route = route
        self.calleeID = calleeID
        self.client = client
        self.remaining = remaining
        self.requestID = requestID
        self.trace = trace
        self.eventLoop = eventLoop
    }

    /// Adds a part of the body; false (and nothing added) when the body would pass `limit`.
    func gather(_ part: ByteBuffer, limit: Int) -> Bool {
        guard (body?.readableBytes ?? 0) + part.readableBytes <= limit else { return false }
        if body == nil {
            body = part
        } else {
            var part = part
            body!.writeBuffer(&part)
        }
        return true
    }
}

/// A relayed call on its way.
struct RelayCall {
    let instance: ServiceInstance
    let answer: EventLoopFuture<HTTP1Answer>
}

extension RelayedAnswer {
    init(status: HTTPResponse.Status, headers: HTTPFields, body: ByteBuffer?) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// The relayed routes by method, literal segments before `{id}`.
struct RelayRoutes: Sendable {
    struct Entry: Sendable {
        let route: ProxyRoute
        /// The path's segments under `/api/v1/`; nil stands for `{id}`.
        let segments: [String?]
        /// The route as the router names it in metrics: `/api/v1/coupons/campaigns/{id}/claim`.
        let name: String
    }

    private let entries: [HTTPRequest.Method: [Entry]]
    static let prefix = "/api/v1/"

    init(_ routes: [ProxyRoute]) {
        var entries: [HTTPRequest.Method: [Entry]] = [:]
        for route in routes {
            let segments: [String?] = route.path.split(separator: "/").map { $0 == "{id}" ? nil : String($0) }
            entries[route.method, default: []].append(Entry(route: route, segments: segments, name: Self.prefix + route.path))
        }
        self.entries = entries.mapValues { $0.sorted { $0.segments.count(where: { $0 == nil }) < $1.segments.count(where: { $0 == nil }) } }
    }

    /// The route `path` takes, and its `{id}`; nil when none does (a query, a trailing slash or an `{id}`
    /// that is not a plain segment of unreserved characters, which the router decodes, match none).
    func match(_ method: HTTPRequest.Method, _ path: String) -> (Entry, Substring?)? {
        let bytes = path.utf8
        guard let candidates = entries[method], bytes.starts(with: Self.prefix.utf8) else { return nil }
        let start = bytes.index(bytes.startIndex, offsetBy: Self.prefix.utf8.count)
        candidates: for entry in candidates {
            var index = start
            var parameter: Range<String.Index>? = nil
            for (number, segment) in entry.segments.enumerated() {
                let end = bytes[index...].firstIndex(of: UInt8(ascii: "/")) ?? bytes.endIndex
                let part = bytes[index..<end]
                if let segment {
                    guard part.elementsEqual(segment.utf8) else { continue candidates }
                } else {
                    guard !part.isEmpty, part.allSatisfy(\.isUnreservedInURI) else { continue candidates }
                    parameter = index..<end
                }
                if number == entry.segments.count - 1 {
                    guard end == bytes.endIndex else { continue candidates }
                } else {
                    guard end != bytes.endIndex else { continue candidates }
                    index = bytes.index(after: end)
                }
            }
            return (entry, parameter.map { path[$0] })
        }
        return nil
    }
}

/// The router's request metrics (`hb_requests`, `http_server_request_duration`,
/// `http_server_active_requests`) for relayed requests, each made once.
final class RelayMetrics: Sendable {
    private struct Key: Hashable {
        var route: String
        var method: HTTPRequest.Method
        var status: Int
    }
    private let endpoints = Mutex<[Key: (Counter, Metrics.Timer)]>([:])
    private let active = Mutex<[HTTPRequest.Method: Meter]>([:])

    private func meter(_ method: HTTPRequest.Method) -> Meter {
        active.withLock { meters in
            if let meter = meters[method] { return meter }
            let meter = Meter(label: "http.server.active_requests", dimensions: [("http.request.method", method.description)])
            meters[method] = meter
            return meter
        }
    }

    func began(_ method: HTTPRequest.Method) { meter(method).increment() }

    func ended(_ method: HTTPRequest.Method) { meter(method).decrement() }

    func answered(_ request: RelayedRequest, status: HTTPResponse.Status) {
        let key = Key(route: request.route.name, method: request.head.method, status: status.code)
        let (counter, timer) = endpoints.withLock { endpoints in
            if let known = endpoints[key] { return known }
            let dimensions = [
                ("http.route", key.route), ("http.request.method", key.method.description),
                ("http.response.status_code", String(key.status)),
            ]
            let made = (
                Counter(label: "hb.requests", dimensions: dimensions),
                Metrics.Timer(label: "http.server.request.duration", dimensions: dimensions, preferredDisplayUnit: .seconds)
            )
            endpoints[key] = made
            return made
        }
        counter.increment()
        timer.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - request.started)
        ended(request.head.method)
    }
}

/// The `Date` header's value, made once a second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((-1, ""))
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func now() -> String {
        var seconds = time(nil)
        let second = Int(seconds)
        if let text = cache.withLock({ $0.second == second ? $0.text : nil }) { return text }
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let text =
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
        cache.withLock { $0 = (second, text) }
        return text
    }
}
