import Contracts
import EventBus
import Foundation
import HailKit
import Logging
import Metrics
import RedisKit
import SQLiteKit
import Synchronization

/// Reads every stream analytics keeps figures from, one consumer group (`analytics`) per stream, each
/// read stored in one transaction with the ids of the events it held (so a redelivered event changes
/// nothing). `hailstorm_analytics_lag_seconds{stream}` is how old the last event handled was when it
/// was handled.
struct AnalyticsIngest: Sendable {
    static let group = "analytics"

    /// The streams read, by name as configured (`analytics.<name>.stream`).
    struct Streams: Sendable {
        var order = OrderEvents.Created.stream
        var payment = PaymentEvents.Succeeded.stream
        var coupon = CouponEvents.Claimed.stream
        var ad = AdEvents.Counted.stream
        var location = LocationEvents.Fixes.stream
        var quotes = QuoteEvents.Given.stream

        var all: [String] { [order, payment, coupon, ad, location, quotes] }
    }

    let store: AnalyticsStore
    let streams: Streams
    let gate: IngestGate

    /// Applies one event inside the caller's transaction; events of other types are skipped.
    func apply(_ envelope: EventEnvelope, in db: Database) throws {
        switch envelope.type {
        case OrderEvents.Created.type:
            try store.orderCreated(try envelope.decode(OrderEvents.Created.self), in: db)
        case _ where envelope.stream == streams.order && envelope.type.hasPrefix("order."):
            try store.orderMoved(try envelope.decode(OrderEvents.Moved.self), in: db)
        case PaymentEvents.Succeeded.type:
            try store.paymentSucceeded(try envelope.decode(PaymentEvents.Succeeded.self), in: db)
        case CouponEvents.Claimed.type:
            try store.couponClaimed(try envelope.decode(CouponEvents.Claimed.self), in: db)
        case AdEvents.Counted.type, AdEvents.Counted.clickType:
            try store.adCounted(try envelope.decode(AdEvents.Counted.self), isClick: envelope.type == AdEvents.Counted.clickType, in: db)
        case LocationEvents.Fixes.type:
            try store.fixes(try envelope.decode(LocationEvents.Fixes.self).fixes, in: db)
        case QuoteEvents.Given.type:
            try store.quotes(try envelope.decode(QuoteEvents.Given.self).quotes, in: db)
        default:
            break
        }
    }

    /// Stores a batch of one stream's events, each once.
    func store(_ envelopes: [EventEnvelope], stream: String) async throws {
        try await ProcessedEvents.each(envelopes, consumer: "analytics-\(stream)", store: store.db) { envelope, db in
            try apply(envelope, in: db)
        }
    }

    func consumers(redis: RedisClient, instance: String, batchSize: Int, gather: Duration, logger: Logger) -> [EventConsumer] {
        streams.all.map { stream in
            let lag = Gauge(label: "hailstorm_analytics_lag_seconds", dimensions: [("stream", stream)])
            let handled = Counter(label: "hailstorm_analytics_events_total", dimensions: [("stream", stream)])
            return EventConsumer.batching(
                stream: stream, group: Self.group, consumer: instance, redis: redis,
                configuration: EventConsumerConfiguration(batchSize: batchSize, gather: gather), logger: logger
            ) { envelopes in
                try await gate.pass {
                    try await store(envelopes, stream: stream)
                }
                if let last = envelopes.last {
                    lag.record(max(0, Date().timeIntervalSince1970 - last.occurredAt))
                    handled.increment(by: envelopes.count)
                }
            }
        }
    }

    /// Empties analytics' tables and reads every stream again from its first entry, then analyses
    /// every completed trip: the same figures as reading them live. The consumers wait meanwhile; what
    /// they then read that the rebuild already applied is recognised by its event id. A rebuild that
    /// stops halfway (the process ends) leaves its mark, and the next start runs it again.
    func rebuild(redis: RedisClient, analyser: PathAnalyser, logger: Logger) async throws -> Int {
        try await gate.exclusive {
            try await store.wipe()
            var total = 0
            for stream in streams.all {
                let key = EventEnvelope.streamKey(stream)
                var start = "-"
                while true {
                    let entries = try await redis.xrange(key, from: start, count: 1000)
                    guard let last = entries.last else { break }
                    let envelopes = entries.compactMap { EventEnvelope(entry: $0, stream: stream) }
                    try await store(envelopes, stream: stream)
                    total += envelopes.count
                    start = "(" + last.id
                }
                logger.info("analytics stream replayed", metadata: ["stream": "\(stream)", "events": "\(total)"])
            }
            while try await analyser.analyseDue(before: .greatestFiniteMagnitude) == .more {}
            try await store.rebuilt()
            return total
        }
    }
}

/// Lets the stream consumers through one batch at a time each, except while a rebuild runs: it waits
/// for the batches in flight, then holds every consumer until it is done.
final class IngestGate: Sendable {
    private struct State {
        var closed = false
        var inFlight = 0
    }
    private let state = Mutex(State())

    func pass<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        while !state.withLock({ state in
            guard !state.closed else { return false }
            state.inFlight += 1
            return true
        }) {
            try await Task.sleep(for: .milliseconds(50))
        }
        defer { state.withLock { $0.inFlight -= 1 } }
        return try await body()
    }

    func exclusive<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        while !state.withLock({ state in
            guard !state.closed else { return false }
            state.closed = true
            return true
        }) {
            try await Task.sleep(for: .milliseconds(50))
        }
        defer { state.withLock { $0.closed = false } }
        while state.withLock({ $0.inFlight }) > 0 { try await Task.sleep(for: .milliseconds(10)) }
        return try await body()
    }
}

/// Reads the path of every completed trip once its fixes have had time to arrive
/// (`analytics.path.delay.seconds` after completion), and keeps what it found for the anomalies list.
struct PathAnalyser: Sendable {
    let store: AnalyticsStore
    let analysis: PathAnalysis
    let delay: Double
    let toleranceMeters: Double

    func analyseDue(before cutoff: Double? = nil) async throws -> PeriodicWork.Outcome {
        let ids = try await store.tripsToAnalyse(before: cutoff ?? Date().timeIntervalSince1970 - delay, limit: 500)
        for id in ids {
            guard let trip = try await store.trip(id) else { continue }
            try await store.savePath(analysis.analyse(trip.facts, fixes: trip.fixes, toleranceMeters: toleranceMeters).analysis)
        }
        return ids.count == 500 ? .more : .done
    }
}
