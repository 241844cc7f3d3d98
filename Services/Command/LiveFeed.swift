import Contracts
import Foundation
import HailKit
import Logging
import RedisKit
import Synchronization

/// Pushes a `CommandAPI.Snapshot` to every operator whose page asked for one (`POST …/live`, a lease of
/// `lease`), every `interval`: published on the operator's push channel (`push:user:<id>`), which every
/// gateway instance writes to that operator's WebSocket. The board comes from Prometheus, alerts and
/// audit from the command centre's own file, drivers and waiting orders from matching, surge cells from
/// order, the last hour's figures and flagged trips from analytics (asked with the command centre's own
/// service credentials). Nothing is read while nobody watches.
final class LiveFeed: Sendable {
    let store: CommandStore
    let prometheus: PrometheusReader?
    let clients: ServiceClient
    let credentials: ServiceCredentials
    let redis: RedisClient
    let interval: Duration
    let lease: Duration
    private let watchers = Mutex<[String: ContinuousClock.Instant]>([:])
    /// Flagged trips' paths, by order: a completed trip's path does not change once analysed.
    private let paths = Mutex<[String: [[Double]]]>([:])
    /// How many flagged trips a snapshot draws (the newest).
    static let flaggedShown = 20

    init(
        store: CommandStore, prometheus: PrometheusReader?, clients: ServiceClient, credentials: ServiceCredentials, redis: RedisClient,
        interval: Duration, lease: Duration = .seconds(30)
    ) {
        self.store = store
        self.prometheus = prometheus
        self.clients = clients
        self.credentials = credentials
        self.redis = redis
        self.interval = interval
        self.lease = lease
    }

    /// Starts or renews `user`'s lease.
    func watch(_ user: String, now: Double = Date().timeIntervalSince1970) -> CommandAPI.LiveLease {
        watchers.withLock { $0[user] = .now + lease }
        return CommandAPI.LiveLease(everyMs: Int(interval.millisecondsValue), until: now + lease.secondsValue)
    }

    /// The operators whose lease runs; expired leases are forgotten.
    func current() -> [String] {
        watchers.withLock { watchers in
            let now = ContinuousClock.now
            watchers = watchers.filter { $0.value > now }
            return watchers.keys.sorted()
        }
    }

    func snapshot(now: Double = Date().timeIntervalSince1970) async -> CommandAPI.Snapshot {
        var unavailable: [String: String] = [:]
        var board: CommandAPI.Board? = nil
        if let prometheus {
            do { board = try await prometheus.board(now: now) } catch { unavailable["board"] = "\(error)" }
        } else {
            board = CommandAPI.Board(at: now, prometheus: "not configured", instances: [])
        }
        let alerts = (try? await store.alerts(state: nil, limit: 30)) ?? []
        let audit = (try? await store.audit(limit: 15)) ?? []
        var drivers: [MatchingAPI.DriverStatus]? = nil
        do {
            // Matching split by city: every city's drivers.
            drivers = MatchingAPI.DriverList.merged(try await clients.callEveryShard(
                MatchingAPI.drivers, NoContent(), headers: try await credentials.headers(for: MatchingAPI.service), context: .none
            )).drivers
        } catch {
            unavailable["drivers"] = "\(error)"
        }
        var kpis: AnalyticsAPI.KPIs? = nil
        do {
            let minute = (now / 60).rounded(.down) * 60
            kpis = try await clients.call(
                AnalyticsAPI.kpis, NoContent(), query: ["from": String(Int(minute - 3540)), "to": String(Int(minute + 60)), "step": "minute"],
                headers: try await credentials.headers(for: AnalyticsAPI.service), context: .none)
        } catch {
            unavailable["kpis"] = "\(error)"
        }
        var surge: OrderAPI.SurgeMap? = nil
        do {
            surge = try await clients.call(
                OrderAPI.surgeMap, NoContent(), headers: try await credentials.headers(for: OrderAPI.service), context: .none)
        } catch {
            unavailable["surge"] = "\(error)"
        }
        var waiting: MatchingAPI.WaitingOrders? = nil
        do {
            waiting = MatchingAPI.WaitingOrders.merged(
                try await clients.callEveryShard(
                    MatchingAPI.waiting, NoContent(), query: ["limit": "500"],
                    headers: try await credentials.headers(for: MatchingAPI.service), context: .none),
                limit: 500)
        } catch {
            unavailable["waiting"] = "\(error)"
        }
        var flagged: [CommandAPI.FlaggedTrip]? = nil
        do {
            flagged = try await flaggedTrips(since: now - 3600, until: now)
        } catch {
            unavailable["flagged"] = "\(error)"
        }
        return CommandAPI.Snapshot(
            at: now, board: board, alerts: alerts, audit: audit, drivers: drivers, kpis: kpis, surge: surge, waiting: waiting,
            flagged: flagged, unavailable: unavailable)
    }

    /// The newest trips analytics flagged in the range, each with its simplified path (read once per trip).
    func flaggedTrips(since from: Double, until to: Double) async throws -> [CommandAPI.FlaggedTrip] {
        let headers = try await credentials.headers(for: AnalyticsAPI.service)
        let list = try await clients.call(
            AnalyticsAPI.anomalies, NoContent(), query: ["from": String(Int(from)), "to": String(Int(to) + 1)], headers: headers, context: .none)
        let newest = list.trips.sorted { ($0.completedAt ?? 0) > ($1.completedAt ?? 0) }.prefix(Self.flaggedShown)
        var trips: [CommandAPI.FlaggedTrip] = []
        for trip in newest {
            var path = paths.withLock { $0[trip.orderID] }
            if path == nil {
                let drawn = try await clients.call(
                    AnalyticsAPI.tripPath, NoContent(), parameters: ["id": trip.orderID], headers: headers, context: .none)
                let line = drawn.features.first { $0.properties.part == "simplified" } ?? drawn.features.first { $0.properties.part == "driven" }
                var points: [[Double]] = []
                if case .lineString(let line)? = line?.geometry { points = line.map { [$0.lat, $0.lon] } }
                path = points
                paths.withLock { cache in
                    if cache.count >= 500 { cache.removeAll() }
                    cache[trip.orderID] = points
                }
            }
            trips.append(CommandAPI.FlaggedTrip(
                orderID: trip.orderID, driverID: trip.driverID, flags: trip.flags, completedAt: trip.completedAt, path: path ?? []))
        }
        return trips
    }

    /// One push to every watcher; how many were sent to.
    @discardableResult
    func push() async throws -> Int {
        let users = current()
        guard !users.isEmpty else { return 0 }
        let text = String(decoding: try JSONBody.encoder.encode(await snapshot()), as: UTF8.self)
        for user in users {
            try await redis.send("PUBLISH", PushMessage.channel(user: user), text)
        }
        return users.count
    }

    func periodic(logger: Logger) -> PeriodicWork {
        PeriodicWork("live-feed", every: interval, maxBackoff: .seconds(5), logger: logger) {
            try await self.push()
        }
    }
}
