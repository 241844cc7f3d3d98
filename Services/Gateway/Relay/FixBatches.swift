import Contracts
import HailKit
import Logging
import Metrics
import NIOCore
import Synchronization

/// Drivers' fixes (`POST /api/v1/driver/locations`), gathered for up to `window` or `limit` drivers and
/// handed to matching in one `MatchingAPI.locationBatch` call. Each driver is answered what matching
/// answered for its entry — `{"accepted": n}` or the problem its own call would have had — once the
/// batch's call has come back, so an answered fix is a fix matching has taken, as before.
///
/// A fleet's fixes are the platform's most frequent request (10,000 drivers with a fix every 10 s are
/// 1,000 a second), and each one alone cost matching a whole request, most of it waking up and
/// Hummingbird's per-request work rather than the fix. Gathered, matching does that work once per batch.
/// What it costs a driver is up to `window` of latency on its answer.
///
/// When the batch's call fails, each of its requests goes back to the relay as a failed call: a deadline
/// answers 504, anything else is retried through the router, one request at a time, as any relayed call
/// that failed (a fix is idempotent).
final class FixBatches: Sendable {
    private struct Waiting {
        var driver: String
        var points: [MatchingAPI.LocationPoint]
        var requestID: String
        var promise: EventLoopPromise<HTTP1Answer>
    }

    private struct State {
        /// By shard of matching (-1: matching is not split).
        var waiting: [Int: [Waiting]] = [:]
        /// The shards a flush is scheduled for.
        var scheduled: Set<Int> = []
    }

    /// A batch whose call did not come back with an answer for each of its requests.
    enum Failure: Error {
        case noAnswer
    }

    let window: TimeAmount
    let limit: Int
    let timeout: Duration
    private let clients: ServiceClient
    private let credentials: ServiceCredentials
    private let logger: Logger
    private let state = Mutex(State())
    /// The shard of matching split by city that takes a driver's fixes (its latest fix's city's); nil
    /// when matching is not split.
    private let shard: @Sendable ([MatchingAPI.LocationPoint]) -> Int?
    private let batches = Counter(label: "hailstorm_gateway_fix_batches_total")
    private let gathered = Counter(label: "hailstorm_gateway_fixes_gathered_total")

    init(
        clients: ServiceClient, credentials: ServiceCredentials, window: Duration, limit: Int, timeout: Duration,
        shard: @escaping @Sendable ([MatchingAPI.LocationPoint]) -> Int? = { _ in nil }, logger: Logger
    ) {
        self.shard = shard
        self.clients = clients
        self.credentials = credentials
        self.window = .nanoseconds(window.nanosecondsValue)
        self.limit = min(limit, MatchingAPI.locationBatchLimit)
        self.timeout = timeout
        self.logger = logger
    }

    /// Gathers one driver's fixes; the answer comes on `loop` once its batch's call has come back.
    func add(driver: String, points: [MatchingAPI.LocationPoint], requestID: String, on loop: any EventLoop) -> EventLoopFuture<HTTP1Answer> {
        let promise = loop.makePromise(of: HTTP1Answer.self)
        let entry = Waiting(driver: driver, points: points, requestID: requestID, promise: promise)
        let key = shard(points) ?? -1
        let (full, schedule) = state.withLock { state -> ([Waiting]?, Bool) in
            state.waiting[key, default: []].append(entry)
            if state.waiting[key]!.count >= limit {
                defer { state.waiting[key]!.removeAll(keepingCapacity: true) }
                return (state.waiting[key], false)
            }
            if state.scheduled.contains(key) { return (nil, false) }
            state.scheduled.insert(key)
            return (nil, true)
        }
        if let full { send(full, shard: key) }
        if schedule {
            loop.scheduleTask(in: window) { [self] in
                let due = state.withLock { state -> [Waiting] in
                    state.scheduled.remove(key)
                    defer { state.waiting[key]?.removeAll(keepingCapacity: true) }
                    return state.waiting[key] ?? []
                }
                if !due.isEmpty { send(due, shard: key) }
            }
        }
        return promise.futureResult
    }

    private func send(_ batch: [Waiting], shard key: Int) {
        batches.increment()
        gathered.increment(by: batch.count)
        let body = MatchingAPI.LocationBatch(drivers: batch.map { .init(driverID: $0.driver, points: $0.points) })
        let eventLoop = batch[0].promise.futureResult.eventLoop
        Task { [clients, credentials, timeout, logger] in
            do {
                let headers = try await credentials.headers(for: MatchingAPI.service)
                let context = CallContext(deadline: ContinuousClock.now + timeout, eventLoop: eventLoop)
                let answer = try await clients.call(
                    MatchingAPI.locationBatch, body, headers: headers, shard: key < 0 ? nil : key, context: context)
                guard answer.results.count == batch.count else { throw Failure.noAnswer }
                for (entry, result) in zip(batch, answer.results) {
                    entry.promise.succeed(Self.answer(result, requestID: entry.requestID))
                }
            } catch {
                logger.notice("fix batch failed", metadata: ["fixes": "\(batch.count)", "error": "\(error)"])
                let failure: any Error =
                    if let problem = error as? Problem, problem.status == .gatewayTimeout { HTTP1CallError.deadlineExceeded } else { error }
                for entry in batch { entry.promise.fail(failure) }
            }
        }
    }

    private static let jsonHeaders = ByteBuffer(string: "content-type: application/json\r\n")
    private static let problemHeaders = ByteBuffer(string: "content-type: application/problem+json\r\n")

    /// What a driver's own call would have been answered: matching's answer for its entry.
    static func answer(_ result: MatchingAPI.LocationBatchResult.Outcome, requestID: String) -> HTTP1Answer {
        if let problem = result.problem {
            return HTTP1Answer(status: problem.status, headerBlock: problemHeaders, body: Problem(document: problem).body(requestID: requestID))
        }
        var body = ByteBuffer()
        body.writeStaticString("{\"accepted\":")
        body.writeString(String(result.accepted ?? 0))
        body.writeStaticString("}")
        return HTTP1Answer(status: result.status, headerBlock: jsonHeaders, body: body)
    }
}
