import Configuration
import Contracts
import Discovery
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// How calls to other services behave.
public struct ServiceClientConfiguration: Sendable {
    /// Time a call may take, retries included, unless the caller's own deadline is sooner.
    public var timeout: Duration
    /// Attempts of a retryable call, the first included.
    public var maxAttempts: Int
    /// Backoff before retry n is a random duration up to `min(backoffCap, backoffBase · 2ⁿ)` (full jitter).
    public var backoffBase: Duration
    public var backoffCap: Duration
    /// Consecutive failures that open an instance's breaker, and how long it stays open.
    public var breakerThreshold: Int
    public var breakerCooldown: Duration
    /// How long a list of instances from discovery is reused while discovery cannot be followed (see
    /// `ServiceClient`); zero asks discovery on every call and follows nothing.
    public var discoveryCacheTTL: Duration
    /// How the services that keep their own data are split (`shards`): a call about an entity of a split
    /// service goes to the instance owning its shard.
    public var shards = ShardMap()

    public init(
        timeout: Duration = .seconds(5),
        maxAttempts: Int = 3,
        backoffBase: Duration = .milliseconds(25),
        backoffCap: Duration = .milliseconds(500),
        breakerThreshold: Int = 5,
        breakerCooldown: Duration = .seconds(5),
        discoveryCacheTTL: Duration = .seconds(1)
    ) {
        self.timeout = timeout
        self.maxAttempts = max(1, maxAttempts)
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self.breakerThreshold = breakerThreshold
        self.breakerCooldown = breakerCooldown
        self.discoveryCacheTTL = discoveryCacheTTL
    }

    /// Reads `client.*`: `timeout.ms`, `attempts`, `backoff.base.ms`, `backoff.cap.ms`,
    /// `breaker.threshold`, `breaker.cooldown.ms`, `discovery.cache.ms`.
    public init(reader: ConfigReader) throws {
        self.init(
            timeout: .milliseconds(try reader.int(forKey: "timeout.ms", default: 5000, in: 1...3_600_000)),
            maxAttempts: try reader.int(forKey: "attempts", default: 3, in: 1...10),
            backoffBase: .milliseconds(try reader.int(forKey: "backoff.base.ms", default: 25, in: 1...60_000)),
            backoffCap: .milliseconds(try reader.int(forKey: "backoff.cap.ms", default: 500, in: 1...60_000)),
            breakerThreshold: try reader.int(forKey: "breaker.threshold", default: 5, in: 1...1000),
            breakerCooldown: .milliseconds(try reader.int(forKey: "breaker.cooldown.ms", default: 5000, in: 1...3_600_000)),
            discoveryCacheTTL: .milliseconds(try reader.int(forKey: "discovery.cache.ms", default: 1000, in: 0...3_600_000))
        )
    }
}

/// What another service answered.
public struct ServiceResponse: Sendable {
    public var status: HTTPResponse.Status
    public var headers: HTTPFields
    public var body: ByteBuffer
    /// The instance that answered.
    public var instance: ServiceInstance
    /// Attempts it took.
    public var attempts: Int
}

/// Calls other services by name.
///
/// Instances come from discovery: where it can be followed (etcd's watch), the client follows it from its
/// first call on and never waits for it again, and an instance that registers or deregisters counts from
/// the moment etcd reports it; while it cannot (the watch is down, or the backend has none), each
/// service's list is listed again once it is `discoveryCacheTTL` old, and the last list is used while
/// discovery does not answer.
///
/// discovery → instances whose breaker is not open → power of two choices on outstanding requests →
/// the call, with the remaining deadline in `X-Hailstorm-Deadline-Ms`, the request id and a W3C
/// `traceparent` → on a 502/503/504 or a connection failure, a retry with jittered backoff, but only for
/// calls that are safe to repeat (idempotent methods, or an Idempotency-Key) → each outcome feeds the
/// instance's breaker.
public final class ServiceClient: Sendable {
    public let configuration: ServiceClientConfiguration
    public let breakers: CircuitBreakers
    private let discovery: any ServiceDiscovery
    /// The keep-alive connections calls go out on.
    public let connections: HTTP1Connections
    private let logger: Logger
    private let outstanding = NIOLockedValueBox<[String: Int]>([:])
    private let listing = NIOLockedValueBox(Listing())
    private let following = NIOLockedValueBox<Task<Void, Never>?>(nil)

    /// The instances known, by service, and whether discovery is being followed live (then the lists are
    /// current whatever their age, and a service missing has no instance).
    struct Listing {
        var lists: [String: (instances: [ServiceInstance], fetched: ContinuousClock.Instant)] = [:]
        var live = false
        var followStarted = false

        /// The current list of `service`, if known to be current at `now`.
        func current(_ service: String, now: ContinuousClock.Instant, ttl: Duration) -> [ServiceInstance]? {
            if live { return lists[service]?.instances ?? [] }
            guard let cached = lists[service], now - cached.fetched < ttl else { return nil }
            return cached.instances
        }
    }

    public init(
        discovery: any ServiceDiscovery,
        connections: HTTP1Connections = .shared,
        configuration: ServiceClientConfiguration = .init(),
        logger: Logger = Logger(label: "hailstorm.client")
    ) {
        self.discovery = discovery
        self.connections = connections
        self.configuration = configuration
        self.breakers = CircuitBreakers(threshold: configuration.breakerThreshold, cooldown: configuration.breakerCooldown)
        self.logger = logger
    }

    deinit {
        following.withLockedValue { $0?.cancel() }
    }

    // MARK: Typed calls

    /// Calls a contract endpoint. A problem answered by the callee is thrown as that same `Problem`.
    public func call<Req, Res>(
        _ endpoint: Endpoint<Req, Res>,
        _ body: Req,
        parameters: [String: String] = [:],
        query: [String: String] = [:],
        headers: HTTPFields = [:],
        shard: Int? = nil,
        context: CallContext
    ) async throws -> Res {
        var headers = headers
        var buffer: ByteBuffer? = nil
        if Req.self != NoContent.self {
            buffer = try JSONBody.encode(body)
            headers[.contentType] = "application/json"
        }
        let response = try await send(
            service: endpoint.service,
            method: endpoint.method,
            path: endpoint.path(parameters) + Self.queryString(query),
            headers: headers,
            body: buffer,
            idempotent: endpoint.isIdempotent,
            shard: shard,
            context: context
        )
        guard (200..<300).contains(response.status.code) else {
            throw Self.problem(from: response, service: endpoint.service)
        }
        if Res.self == NoContent.self { return NoContent() as! Res }
        do {
            return try JSONBody.decode(Res.self, from: response.body)
        } catch {
            throw Problem(
                .badGateway, slug: "bad-gateway", title: "A service answered something unexpected",
                detail: "A service behind this one answered a body it does not understand; the request id finds it in the logs")
        }
    }

    /// `?name=value&…` with values percent-encoded, names sorted; empty for no query.
    public static func queryString(_ query: [String: String]) -> String {
        guard !query.isEmpty else { return "" }
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return "?" + query.sorted { $0.key < $1.key }.map { name, value in
            "\(name)=\(value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value)"
        }.joined(separator: "&")
    }

    /// The problem a non-2xx answer carries, or a 502 when it carries none.
    public static func problem(from response: ServiceResponse, service: String) -> Problem {
        problem(status: response.status.code, retryAfter: response.headers[.retryAfter], body: response.body)
    }

    /// The problem an answer with `status`, `Retry-After` and `body` carries, or a 502 when it carries none.
    public static func problem(status: Int, retryAfter: String?, body: ByteBuffer) -> Problem {
        if let document = try? JSONBody.decoder.decode(ProblemDocument.self, from: Data(body.readableBytesView)) {
            var headers: HTTPFields = [:]
            if let retryAfter { headers[.retryAfter] = retryAfter }
            return Problem(document: document, headers: headers)
        }
        return Problem(
            .badGateway, slug: "bad-gateway", title: "A service failed",
            detail: "A service behind this one answered \(status) without a problem document")
    }

    // MARK: Raw calls

    /// Sends one request to an instance of `service`, with retries, balancing and breakers as described above.
    /// Any answer the callee gives is returned, whatever its status; failures to get one throw a `Problem`
    /// (503 no instance, 504 deadline, 502 unreachable).
    public func send(
        service: String,
        method: HTTPRequest.Method,
        path: String,
        headers: HTTPFields = [:],
        body: ByteBuffer? = nil,
        idempotent: Bool? = nil,
        timeout: Duration? = nil,
        shard: Int? = nil,
        context: CallContext
    ) async throws -> ServiceResponse {
        let start = ContinuousClock.now
        var deadline = start + (timeout ?? configuration.timeout)
        if let inherited = context.deadline, inherited < deadline { deadline = inherited }
        let retryable = (idempotent ?? [.get, .head, .put, .delete, .options].contains(method))
            || headers[HailHeaders.idempotencyKey] != nil || context.idempotencyKey != nil
        let attempts = retryable ? configuration.maxAttempts : 1
        var lastFailure: Problem? = nil
        var tried: Set<String> = []

        for attempt in 1...attempts {
            if attempt > 1 {
                let cap = min(configuration.backoffCap, configuration.backoffBase * (1 << min(attempt - 1, 16)))
                let pause = Duration.nanoseconds(Int64.random(in: 0...max(1, cap.nanosecondsValue)))
                if ContinuousClock.now + pause >= deadline { break }
                try await Task.sleep(for: pause)
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { break }
            let instance = try await pick(service, shard: shard, avoiding: tried)
            tried.insert(instance.id)

            let request = Self.request(
                method: method, path: path, headers: headers, instance: instance, context: context, remaining: remaining,
                body: body)

            started(instance)
            defer { adjustOutstanding(instance.id, by: -1) }
            do {
                let response = try await connections.execute(
                    host: instance.host, port: instance.port, request: request, noBody: method == .head,
                    deadline: .now() + .nanoseconds(remaining.nanosecondsValue), eventLoop: context.eventLoop)
                let status = HTTPResponse.Status(code: response.status)
                let answer = ServiceResponse(
                    status: status, headers: response.fields, body: response.body, instance: instance, attempts: attempt)
                if [502, 503, 504].contains(status.code) {
                    record(.unavailable, service: service, instance: instance)
                    lastFailure = Self.problem(from: answer, service: service)
                    if attempt < attempts, retryable {
                        logger.debug("retrying", metadata: ["callee": "\(service)", "status": "\(status.code)", "attempt": "\(attempt)"])
                        continue
                    }
                    return answer
                }
                record(.ok, service: service, instance: instance)
                return answer
            } catch HTTP1CallError.deadlineExceeded {
                record(.deadline, service: service, instance: instance)
                throw Problem.deadlineExceeded("A service behind this one did not answer within the deadline")
            } catch HTTP1CallError.cancelled {
                throw CancellationError()
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                record(.unreachable, service: service, instance: instance)
                logger.debug("call failed", metadata: ["callee": "\(service)", "callee_instance": "\(instance.id)", "address": "\(instance.host):\(instance.port)", "error": "\(error)"])
                lastFailure = Problem(
                    .badGateway, slug: "unreachable", title: "A service could not be reached",
                    detail: "A service behind this one could not be reached; try again")
                if ContinuousClock.now >= deadline {
                    throw Problem.deadlineExceeded("A service behind this one did not answer within the deadline")
                }
            }
        }
        if ContinuousClock.now >= deadline {
            throw Problem.deadlineExceeded("A service behind this one did not answer within the deadline")
        }
        throw lastFailure ?? Problem.unavailable("A service behind this one is unavailable", retryAfterSeconds: 1)
    }

    // MARK: Instances

    /// Picks an instance (of `shard`, when given): two random candidates with closed (or trial-ready)
    /// breakers, the less busy one.
    func pick(_ service: String, shard: Int? = nil, avoiding tried: Set<String>) async throws -> ServiceInstance {
        try choose(from: Self.owning(shard, of: service, in: try await instances(of: service)), avoiding: tried)
    }

    /// The instances of `all` that own `shard` (an instance that names none owns shard 0, as the one
    /// instance of a service did before it was split); `all` when no shard is asked for. A 503 naming the
    /// shard when none does: the other shards' instances cannot answer for it.
    static func owning(_ shard: Int?, of service: String, in all: [ServiceInstance]) throws -> [ServiceInstance] {
        guard let shard else { return all }
        let owners = all.filter { ($0.shard ?? 0) == shard }
        guard !owners.isEmpty else {
            throw Problem.unavailable("Shard \(shard) of a service behind this one has no instance running", retryAfterSeconds: 1)
        }
        return owners
    }

    // MARK: Shards

    /// Calls `endpoint` on every shard of its service, one after another (once when it is not split):
    /// each shard's answer, in shard order. The first refusal or failure throws, since an answer missing a
    /// shard's part would look whole and be wrong.
    public func callEveryShard<Req, Res>(
        _ endpoint: Endpoint<Req, Res>, _ body: Req, parameters: [String: String] = [:], query: [String: String] = [:],
        headers: HTTPFields = [:], context: CallContext
    ) async throws -> [Res] {
        let count = shardCount(of: endpoint.service)
        var answers: [Res] = []
        for shard in 0..<count {
            answers.append(try await call(
                endpoint, body, parameters: parameters, query: query, headers: headers, shard: count > 1 ? shard : nil, context: context))
        }
        return answers
    }

    /// The shards of `service` (1 when it is not split).
    public func shardCount(of service: String) -> Int { configuration.shards.count(of: service) }

    /// The shard of `service` owning the entity `id` names (`Shards.shard(ofID:count:)`); nil when the
    /// service is not split. A 404 when the id names a shard the service does not have: nothing has it.
    public func shard(of service: String, id: some StringProtocol) throws -> Int? {
        let count = shardCount(of: service)
        guard count > 1 else { return nil }
        guard let shard = Shards.shard(ofID: id, count: count) else {
            throw Problem.notFound("Nothing has the id \(id)")
        }
        return shard
    }

    /// `items` in groups by the shard of `service` owning each (`id` of an item: the entity it is about),
    /// shards in order: a batch for a split service is sent as one call per shard. One group, shard nil,
    /// when the service is not split. An id naming a shard the service does not have goes with shard 0's,
    /// which answers that it has no such entity.
    public func groupedByShard<T>(_ items: [T], of service: String, id: (T) -> String) -> [(shard: Int?, items: [T])] {
        let count = shardCount(of: service)
        guard count > 1 else { return [(nil, items)] }
        var groups: [Int: [T]] = [:]
        for item in items { groups[Shards.shard(ofID: id(item), count: count) ?? 0, default: []].append(item) }
        return groups.sorted { $0.key < $1.key }.map { (shard: $0.key, items: $0.value) }
    }

    /// The shard of `service` that a new entity keyed by `key` goes to (a rider's order: the rider's);
    /// nil when the service is not split.
    public func shard(of service: String, key: some StringProtocol) -> Int? {
        let count = shardCount(of: service)
        return count > 1 ? Shards.shard(forKey: key, count: count) : nil
    }

    /// `pick` without waiting: from the instances known now (as discovery is followed, or as it listed them
    /// within `discoveryCacheTTL`); nil when no current list is known (a call through `send` lists them)
    /// or no instance can take a call now.
    public func pickListed(_ service: String, shard: Int? = nil) -> ServiceInstance? {
        let now = ContinuousClock.now
        guard let instances = listing.withLockedValue({ $0.current(service, now: now, ttl: configuration.discoveryCacheTTL) }),
            let owners = try? Self.owning(shard, of: service, in: instances)
        else { return nil }
        return try? choose(from: owners, avoiding: [])
    }

    private func choose(from all: [ServiceInstance], avoiding tried: Set<String>) throws -> ServiceInstance {
        guard !all.isEmpty else {
            throw Problem.unavailable("A service behind this one has no instance running", retryAfterSeconds: 1)
        }
        var candidates = all.filter { breakers.isCandidate($0.id) }
        if candidates.count > 1 {
            let fresh = candidates.filter { !tried.contains($0.id) }
            if !fresh.isEmpty { candidates = fresh }
        }
        guard !candidates.isEmpty else {
            throw Problem.unavailable("A service behind this one is failing; try again shortly", retryAfterSeconds: 1)
        }
        var chosen = candidates[0]
        if candidates.count > 1 {
            let a = candidates.randomElement()!
            var b = candidates.randomElement()!
            while b.id == a.id { b = candidates.randomElement()! }
            let load = outstanding.withLockedValue { counts in (counts[a.id] ?? 0, counts[b.id] ?? 0) }
            chosen = load.0 <= load.1 ? a : b
        }
        guard breakers.allow(chosen.id) else {
            // Another caller took the half-open trial meanwhile.
            throw Problem.unavailable("A service behind this one is failing; try again shortly", retryAfterSeconds: 1)
        }
        return chosen
    }

    // MARK: Calls made elsewhere

    /// A call to `instance` as it goes on the wire (`HTTP1Wire.request`): `headers` less the ones this
    /// client sets itself, the Idempotency-Key, request id and trace of `context`, the time left
    /// (`X-Hailstorm-Deadline-Ms`), the body's length and the body.
    static func request(
        method: HTTPRequest.Method, path: String, headers: HTTPFields, instance: ServiceInstance, context: CallContext,
        remaining: Duration, body: ByteBuffer?
    ) -> ByteBuffer {
        HTTP1Wire.request(
            method: method, path: path, host: instance.hostHeader, requestID: context.requestID, trace: context.trace,
            deadlineMilliseconds: remaining.millisecondsValue, body: body
        ) { bytes in
            for field in headers where field.name != HailHeaders.requestID && field.name != HailHeaders.traceParent
                && field.name != HailHeaders.traceState && field.name != HailHeaders.deadline && field.name != .contentLength
            {
                HTTP1Wire.header(field.name.rawName, field.value, to: &bytes)
            }
            if let idempotencyKey = context.idempotencyKey, headers[HailHeaders.idempotencyKey] == nil {
                HTTP1Wire.header(HailHeaders.idempotencyKey.rawName, idempotencyKey, to: &bytes)
            }
        }
    }

    /// How a call to an instance ended, for its breaker and `hailstorm_client_calls_total`.
    public enum CallOutcome: String, Sendable {
        /// An answer other than 502/503/504.
        case ok
        /// 502, 503 or 504.
        case unavailable
        /// No answer within the deadline.
        case deadline
        /// No connection, or it closed before the answer.
        case unreachable
    }

    /// A call to `instance` goes out (for balancing on outstanding calls); `finished` when it ends.
    public func started(_ instance: ServiceInstance) {
        adjustOutstanding(instance.id, by: 1)
    }

    /// A call made outside `send` ended.
    public func finished(_ instance: ServiceInstance, service: String, outcome: CallOutcome) {
        adjustOutstanding(instance.id, by: -1)
        record(outcome, service: service, instance: instance)
    }

    private func record(_ outcome: CallOutcome, service: String, instance: ServiceInstance) {
        switch outcome {
        case .ok:
            breakers.recordSuccess(instance.id)
        case .unavailable, .deadline:
            breakers.recordFailure(instance.id)
        case .unreachable:
            breakers.recordFailure(instance.id)
            invalidate(service)
        }
        Self.count(service, outcome)
    }

    /// Instances of `service`: as discovery is followed, or listed within `discoveryCacheTTL`.
    public func instances(of service: String) async throws -> [ServiceInstance] {
        let now = ContinuousClock.now
        let ttl = configuration.discoveryCacheTTL
        let (known, follow) = listing.withLockedValue { listing in
            let known = listing.current(service, now: now, ttl: ttl)
            let follow = !listing.followStarted && ttl > .zero
            if follow { listing.followStarted = true }
            return (known, follow)
        }
        if follow { startFollowing() }
        if let known { return known }
        do {
            let fresh = try await discovery.instances(of: service)
            listing.withLockedValue { listing in
                if !listing.live { listing.lists[service] = (fresh, now) }
            }
            return fresh
        } catch {
            if let stale = listing.withLockedValue({ $0.lists[service] }) {
                logger.warning("discovery failed; using the last known instances", metadata: ["callee": "\(service)", "error": "\(error)"])
                return stale.instances
            }
            logger.warning("discovery could not list a service", metadata: ["callee": "\(service)", "error": "\(error)"])
            throw Problem.unavailable("Services cannot be found at the moment", retryAfterSeconds: 1)
        }
    }

    /// An instance could not be reached: list `service` again on the next call, unless discovery is
    /// followed (then its list is current, and the instance's breaker keeps calls away from it).
    private func invalidate(_ service: String) {
        listing.withLockedValue { listing in
            if !listing.live { listing.lists[service] = nil }
        }
    }

    /// Follows discovery, when it can be followed, for as long as this client lives: every list it
    /// reports replaces the known ones; when the follow ends, the lists age as listed ones do, and it is
    /// started again after a pause (a quarter second, doubling to 30 s while it keeps failing).
    private func startFollowing() {
        let discovery = self.discovery
        let listing = self.listing
        let logger = self.logger
        let task = Task {
            var failures = 0
            while !Task.isCancelled {
                guard let stream = discovery.follow() else { return }
                do {
                    for try await instances in stream {
                        let now = ContinuousClock.now
                        let byService = Dictionary(grouping: instances, by: \.service)
                        listing.withLockedValue { listing in
                            listing.lists = byService.mapValues { ($0, now) }
                            listing.live = true
                        }
                        failures = 0
                    }
                } catch {
                    if !Task.isCancelled {
                        logger.warning("discovery's watch failed; listing instances until it is back", metadata: ["error": "\(error)"])
                    }
                }
                // From now on the lists are as old as the moment the follow ended.
                let now = ContinuousClock.now
                listing.withLockedValue { listing in
                    if listing.live {
                        listing.live = false
                        for service in listing.lists.keys { listing.lists[service]?.fetched = now }
                    }
                }
                failures += 1
                try? await Task.sleep(for: min(.seconds(30), .milliseconds(250) * (1 << min(failures - 1, 7))))
            }
        }
        following.withLockedValue { $0 = task }
    }

    private func adjustOutstanding(_ id: String, by delta: Int) {
        outstanding.withLockedValue { $0[id, default: 0] += delta }
    }

    /// The call counters, each made once.
    private static let counters = NIOLockedValueBox<[String: [CallOutcome: Counter]]>([:])

    private static func count(_ service: String, _ outcome: CallOutcome) {
        let counter = counters.withLockedValue { counters in
            if let known = counters[service]?[outcome] { return known }
            let made = Counter(label: "hailstorm_client_calls_total", dimensions: [("service", service), ("outcome", outcome.rawValue)])
            counters[service, default: [:]][outcome] = made
            return made
        }
        counter.increment()
    }
}

extension ServiceInstance {
    /// The `Host` header of a request to this instance (an IPv6 address in brackets).
    public var hostHeader: String {
        host.utf8.contains(UInt8(ascii: ":")) ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
