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
    /// Where drivers' fixes are gathered for matching; nil: each is relayed on its own.
    let fixBatches: FixBatches?
    /// The request budget's limit, as the header states it.
    private let limitText: String
    private let metrics = RelayMetrics()

    init(
        routes: [ProxyRoute], tokens: AccessTokens, revocations: Revocations, budgets: RequestBudgets, clients: ServiceClient,
        bodyLimit: Int, requestTimeout: Duration?, serverName: String, fixBatches: FixBatches? = nil, logger: Logger
    ) {
        self.fixBatches = fixBatches
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
        /// Relayed: it is sent to the service.
        case relay(RelayedRequest)
        /// Relayable, but this instance has not verified its token yet: `verify` it, then admit again.
        case verify(token: String)
        /// The router answers it.
        case router
    }

    /// `.relay` when this instance can relay the request itself: a relayed route, no `Expect`,
    /// `Connection`, `Upgrade` or deadline of the caller's, no sampled trace, a body within the limit, a verified token
    /// (`verified`, or one remembered) whose role may call the route and that is known not to be signed out,
    /// and the caller's budget known here and not spent (it is counted now).
    func admit(_ head: WireRequest, on eventLoop: any EventLoop, verified: AccessTokenClaims? = nil) -> Admission {
        guard !head.forRouter, head.bodyLength <= bodyLimit, let (route, parameter, query) = routes.match(head.method, head.path),
            let authorization = head.authorization, authorization.hasPrefix("Bearer ")
        else { return .router }
        // A sampled request takes the router's path, which writes its trace line (`TraceLines`).
        if let parent = head.traceParent, Self.isSampled(parent) { return .router }
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
        var trace: TraceContext? = nil
        if let parent = head.traceParent {
            var fields: HTTPFields = [HailHeaders.traceParent: parent]
            if let state = head.traceState { fields[HailHeaders.traceState] = state }
            trace = HailRequestContext.trace(of: fields)
        }
        metrics.began(head.method)
        return .relay(RelayedRequest(
            method: head.method, path: head.path, route: route, calleeID: id, query: query.map(String.init), client: client,
            remaining: remaining, authorization: authorization, token: token, claims: claims, remembered: remembered, idempotencyKey: head.idempotencyKey,
            requestID: HailRequestContext.requestID(from: head.requestID), trace: trace, eventLoop: eventLoop))
    }

    /// Whether a `traceparent` (`00-<trace id>-<span id>-<flags>`) has the sampled flag.
    static func isSampled(_ traceParent: String) -> Bool {
        guard let flags = traceParent.split(separator: "-").last, flags.count == 2, let value = UInt8(flags, radix: 16) else { return false }
        return value & 1 == 1
    }

    /// The token's claims, verified on `eventLoop` once the read that brought it is handled (not within
    /// it, so the connection's handler sees the answer as it would any other); nil when the token is not
    /// valid (the router then refuses it, with the reason). A valid token is remembered, as the router's
    /// verification remembers it. On the loop, not on Swift's pool: the trip to a pool thread and back
    /// cost more than the loop's time the check takes (a cold flash sale at 1,500 claims/s: the gateway at
    /// 45–49 % of a core with the check on the loop, 55 % with the trip), and one ES256 check (~70 µs)
    /// holds the loop's other connections no longer than a few relayed requests do.
    func verify(_ token: String, on eventLoop: any EventLoop) -> EventLoopFuture<AccessTokenClaims?> {
        let tokens = tokens
        return eventLoop.submit { try? tokens.verify(token) }
    }

    /// The request goes to the router after all: it counts it again.
    func handedOver(_ request: RelayedRequest) {
        budgets.giveBack(request.client)
        metrics.ended(request.method)
    }

    /// The call for a whole request (`body`: its body, empty when it has none); nil when its body does not
    /// match the endpoint, no instance of the service (of the shard it is for) is listed, or it is for
    /// every shard (the router then answers, with the reason, or asks each). The request to the service is
    /// written straight into one buffer (`HTTP1Wire.request`): the caller's token with the gateway's
    /// attestation and its Idempotency-Key, with the request id, trace, deadline and body.
    func call(for request: RelayedRequest, body: ByteBuffer, allocator: ByteBufferAllocator) -> RelayCall? {
        let route = request.route.route
        if route.gathered == .driverLocations, let fixBatches, let driver = request.calleeID {
            guard let locations = try? JSONBody.decode(MatchingAPI.Locations.self, from: JSONBody.requireBody(body)) else { return nil }
            return RelayCall(
                instance: nil,
                answer: fixBatches.add(driver: driver, points: locations.points, requestID: request.requestID, on: request.eventLoop))
        }
        if let checkBody = route.checkBody {
            do { try checkBody(body) } catch { return nil }
        }
        // A split service: the shard's owner; the router answers an id naming no shard (404) and a listing
        // of every shard.
        guard
            case .shard(let shard) = try? route.target(
                id: request.calleeID, caller: request.claims.identity.userID, idempotencyKey: request.idempotencyKey,
                query: request.query.map(ProxyRoute.queryPairs) ?? [:], body: body, clients: clients),
            let instance = clients.pickListed(route.service, shard: shard)
        else { return nil }
        let attestation =
            if let remembered = request.remembered {
                tokens.attestation(for: request.token, remembered: remembered, to: route.service)
            } else {
                tokens.attestation(for: request.token, claims: request.claims, to: route.service)
            }
        let sent = route.checkBody == nil ? nil : body
        // What an app shows only when it comes quickly (an ad) has that long.
        let timeout = route.optionalWithin.map { min($0, self.timeout) } ?? self.timeout
        var path = route.calleePath(request.calleeID)
        if let query = request.query { path += "?" + query }
        let bytes = HTTP1Wire.request(
            method: route.calleeMethod, path: path, host: instance.hostHeader,
            requestID: request.requestID, trace: request.trace, deadlineMilliseconds: timeout.millisecondsValue, body: sent,
            allocator: allocator
        ) { bytes in
            HTTP1Wire.header("authorization", request.authorization, to: &bytes)
            if let attestation { HTTP1Wire.header("x-hailstorm-verified", attestation, to: &bytes) }
            if let key = request.idempotencyKey { HTTP1Wire.header("idempotency-key", key, to: &bytes) }
            if let sent, sent.readableBytes > 0 { HTTP1Wire.header("content-type", "application/json", to: &bytes) }
        }
        clients.started(instance)
        let answer = clients.connections.submit(
            host: instance.host, port: instance.port, request: bytes,
            deadline: .now() + .nanoseconds(timeout.nanosecondsValue), eventLoop: request.eventLoop)
        return RelayCall(instance: instance, answer: answer)
    }

    enum Outcome {
        /// Write this answer.
        case answer(ByteBuffer)
        /// A retryable call failed: the router tries again, with backoff.
        case retryThroughRouter
    }

    /// What to do with a call's result, as `ServiceClient.send` and the router's relay would.
    func outcome(
        of request: RelayedRequest, call: RelayCall, result: Result<HTTP1Answer, any Error>, allocator: ByteBufferAllocator
    ) -> Outcome {
        let route = request.route.route
        let retryable = route.isIdempotent || request.idempotencyKey != nil
        let relayed: RelayedAnswer
        if route.optionalWithin != nil {
            // No answer, a late one or a failure: the app shows nothing (as the router's relay answers).
            var failed: ServiceClient.CallOutcome? = nil
            switch result {
            case .success(let answer) where answer.status >= 500: failed = .unavailable
            case .success: break
            case .failure(let error): failed = (error as? HTTP1CallError) == .deadlineExceeded ? .deadline : .unreachable
            }
            if let failed {
                call.finished(clients, service: route.service, outcome: failed)
                logger.notice("optional answer replaced by 204", metadata: ["request_id": "\(request.requestID)", "path": "\(request.path)"])
                let empty = RelayedAnswer(status: .noContent, headers: [:], body: nil)
                metrics.answered(request, status: empty.status)
                return .answer(answerBytes(empty, request: request, allocator: allocator))
            }
        }
        do {
            switch result {
            case .success(let answer):
                let code = answer.status
                let unavailable = code == 502 || code == 503 || code == 504
                call.finished(clients, service: route.service, outcome: unavailable ? .unavailable : .ok)
                if unavailable, retryable {
                    handedOver(request)
                    return .retryThroughRouter
                }
                relayed = try RelayedAnswer(status: code, header: { answer.header($0.rawName) }, body: answer.body)
            case .failure(let error):
                if let error = error as? HTTP1CallError, error == .deadlineExceeded {
                    call.finished(clients, service: route.service, outcome: .deadline)
                    throw Problem.deadlineExceeded("A service behind this one did not answer within the deadline")
                }
                call.finished(clients, service: route.service, outcome: .unreachable)
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
                    "request_id": "\(request.requestID)", "path": "\(request.path)", "status": "\(problem.status.code)",
                    "error": "\(problem)",
                ])
            var headers = problem.headers
            headers[.contentType] = "application/problem+json"
            relayed = RelayedAnswer(status: problem.status, headers: headers, body: problem.body(requestID: request.requestID))
        }
        metrics.answered(request, status: relayed.status)
        return .answer(answerBytes(relayed, request: request, allocator: allocator))
    }

    /// The answer to the client, as bytes: the status line, the relayed headers, the body's length, the
    /// budget's headers, the request id, `Date` and `Server`, then the body.
    private func answerBytes(_ relayed: RelayedAnswer, request: RelayedRequest, allocator: ByteBufferAllocator) -> ByteBuffer {
        var bytes = allocator.buffer(capacity: 320 + (relayed.body?.readableBytes ?? 0))
        bytes.writeStaticString("HTTP/1.1 ")
        bytes.writeString(String(relayed.status.code))
        bytes.writeStaticString(" ")
        // (A status made from a service's code carries no reason phrase of its own.)
        bytes.writeString(HTTPResponseStatus(statusCode: relayed.status.code).reasonPhrase)
        for field in relayed.headers {
            bytes.writeStaticString("\r\n")
            bytes.writeString(field.name.canonicalName)
            bytes.writeStaticString(": ")
            bytes.writeString(field.value)
        }
        if let body = relayed.body {
            bytes.writeStaticString("\r\ncontent-length: ")
            bytes.writeString(String(body.readableBytes))
        }
        bytes.writeStaticString("\r\nratelimit-limit: ")
        bytes.writeString(limitText)
        bytes.writeStaticString("\r\nratelimit-remaining: ")
        bytes.writeString(String(max(0, request.remaining)))
        bytes.writeStaticString("\r\nx-request-id: ")
        bytes.writeString(request.requestID)
        bytes.writeStaticString("\r\ndate: ")
        bytes.writeString(HTTPDate.now())
        bytes.writeStaticString("\r\nserver: ")
        bytes.writeString(serverName)
        bytes.writeStaticString("\r\n\r\n")
        if var body = relayed.body { bytes.writeBuffer(&body) }
        return bytes
    }
}

/// A request taken for relaying.
final class RelayedRequest {
    let method: HTTPRequest.Method
    let path: String
    let route: RelayRoutes.Entry
    /// The callee's `{id}`.
    let calleeID: String?
    /// The query passed on as it came (names the route takes, see `RelayRoutes.passes`).
    let query: String?
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

    init(
        method: HTTPRequest.Method, path: String, route: RelayRoutes.Entry, calleeID: String?, query: String?, client: String,
        remaining: Int, authorization: String, token: String, claims: AccessTokenClaims, remembered: VerifiedToken?, idempotencyKey: String?,
        requestID: String, trace: TraceContext?, eventLoop: any EventLoop
    ) {
        self.method = method
        self.path = path
        self.authorization = authorization
        self.token = token
        self.claims = claims
        self.remembered = remembered
        self.idempotencyKey = idempotencyKey
        self.route = route
        self.calleeID = calleeID
        self.query = query
        self.client = client
        self.remaining = remaining
        self.requestID = requestID
        self.trace = trace
        self.eventLoop = eventLoop
    }
}

/// A relayed call on its way.
struct RelayCall {
    /// The instance called; nil for a request gathered into a batch (`FixBatches`), whose call counts for
    /// the instance it reached.
    let instance: ServiceInstance?
    let answer: EventLoopFuture<HTTP1Answer>

    func finished(_ clients: ServiceClient, service: String, outcome: ServiceClient.CallOutcome) {
        if let instance { clients.finished(instance, service: service, outcome: outcome) }
    }
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
    func match(_ method: HTTPRequest.Method, _ target: String) -> (Entry, Substring?, query: Substring?)? {
        // A query only for a route that passes one on, and only when it names nothing else.
        var path = target[...]
        var query: Substring? = nil
        if let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) {
            path = target[..<mark]
            query = target[target.utf8.index(after: mark)...]
        }
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
            if let query, !Self.passes(query, entry.route.query) { continue candidates }
            return (entry, parameter.map { path[$0] }, query)
        }
        return nil
    }

    /// Whether a query string is one `route` passes on as it came: `name=value` pairs of names it takes,
    /// written in unreserved characters and percent escapes (the service decodes them). Anything else
    /// (another name, a `+`, a bare `%`) goes to the router, which reads each parameter it takes.
    static func passes(_ query: Substring, _ names: [String]) -> Bool {
        guard !names.isEmpty, !query.isEmpty, query.utf8.count <= 1024 else { return false }
        for pair in query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: false) {
            guard let equals = pair.firstIndex(of: UInt8(ascii: "=")),
                names.contains(where: { $0.utf8.elementsEqual(pair[pair.startIndex..<equals]) })
            else { return false }
            let value = pair[pair.index(after: equals)...]
            var index = value.startIndex
            while index < value.endIndex {
                let byte = value[index]
                if byte == UInt8(ascii: "%") {
                    let digits = value[value.index(after: index)...].prefix(2)
                    guard digits.count == 2, digits.allSatisfy({ UInt8(ascii: "0")...UInt8(ascii: "9") ~= $0 || UInt8(ascii: "A")...UInt8(ascii: "F") ~= $0 || UInt8(ascii: "a")...UInt8(ascii: "f") ~= $0 }) else { return false }
                    index = value.index(index, offsetBy: 3)
                } else {
                    guard byte.isUnreservedInURI else { return false }
                    index = value.index(after: index)
                }
            }
        }
        return true
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
        let key = Key(route: request.route.name, method: request.method, status: status.code)
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
        ended(request.method)
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
