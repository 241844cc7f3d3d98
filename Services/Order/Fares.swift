import Contracts
import Foundation
import HailKit
import RedisKit
import Synchronization

/// How fares are made: `(base + distance × per-km) × surge`, never below the minimum.
struct FareRules: Sendable {
    var baseCents: Int
    var perKmCents: Int
    var minimumCents: Int
    var currency: String
    /// Pickups further than this from their drop-off are refused (km).
    var maximumKm: Double

    func quote(_ request: OrderAPI.QuoteRequest, surge: Double) throws -> OrderAPI.Quote {
        guard request.pickup.isValid else { throw Problem.invalidField("pickup", "needs lat in -90…90 and lon in -180…180") }
        guard request.dropoff.isValid else { throw Problem.invalidField("dropoff", "needs lat in -90…90 and lon in -180…180") }
        let km = request.pickup.distanceKm(to: request.dropoff)
        guard km <= maximumKm else {
            throw Problem.invalidField("dropoff", "is \(Int(km)) km from the pickup; rides go at most \(Int(maximumKm)) km")
        }
        let raw = (Double(baseCents) + km * Double(perKmCents)) * surge
        return OrderAPI.Quote(
            distanceKm: (km * 1000).rounded() / 1000, baseFareCents: baseCents, perKmCents: perKmCents, surge: surge,
            fareCents: max(minimumCents, Int(saturating: raw.rounded())), currency: currency)
    }
}

/// The surge factor of each pickup cell: runtime configuration that operators change while the platform
/// runs (`PUT /v1/surge`), kept in a Redis hash so every order instance quotes the same factor at once.
/// A cell without a factor uses `order.surge.default`.
struct SurgeTable: Sendable {
    let redis: RedisClient
    let key: String
    /// Cell size in degrees of latitude and longitude.
    let cellDegrees: Double
    let defaultFactor: Double

    func cell(of point: GeoPoint) -> String {
        "\(Int(saturating: (point.lat / cellDegrees).rounded(.down)))_\(Int(saturating: (point.lon / cellDegrees).rounded(.down)))"
    }

    /// The cell's factor; a stored value outside 1…10 (written by hand, say) counts as none.
    func factor(at point: GeoPoint) async throws -> Double {
        guard let stored = try await redis.send(RedisCommand("HGET", key, cell(of: point))).double,
            stored.isFinite, (1...10).contains(stored)
        else { return defaultFactor }
        return stored
    }

    /// Sets the cell's factor; answers the cell and the factor it had (the default when it had none), read
    /// and replaced in one step so that two operators setting one cell each see what the other left.
    func set(_ factor: Double, at point: GeoPoint) async throws -> (cell: String, previous: Double) {
        let cell = cell(of: point)
        let previous = try await redis.run(Self.swapScript, keys: [key], arguments: [cell, String(factor)]).double
        guard let previous, previous.isFinite, (1...10).contains(previous) else { return (cell, defaultFactor) }
        return (cell, previous)
    }

    /// Every cell with a factor of its own (within 1…10 and not the default), with its bounds.
    func map() async throws -> OrderAPI.SurgeMap {
        let reply = try await redis.send(RedisCommand("HGETALL", key)).array ?? []
        var cells: [OrderAPI.SurgeCell] = []
        for pair in stride(from: 0, to: reply.count - 1, by: 2) {
            guard let cell = reply[pair].string, let factor = reply[pair + 1].double, factor.isFinite, (1...10).contains(factor),
                factor != defaultFactor
            else { continue }
            let parts = cell.split(separator: "_", omittingEmptySubsequences: false)
            guard parts.count == 2, let row = Int(parts[0]), let column = Int(parts[1]) else { continue }
            let south = Double(row) * cellDegrees
            let west = Double(column) * cellDegrees
            cells.append(OrderAPI.SurgeCell(
                cell: cell, factor: factor, south: south, west: west, north: south + cellDegrees, east: west + cellDegrees))
        }
        return OrderAPI.SurgeMap(cellDegrees: cellDegrees, defaultFactor: defaultFactor, cells: cells.sorted { $0.cell < $1.cell })
    }

    static let swapScript = RedisScript("""
        local previous = redis.call('HGET', KEYS[1], ARGV[1])
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        return previous
        """)
}

/// Orders in Redis in front of SQLite (cache-aside): reads try Redis first and fill it on a miss; every
/// change deletes the entry after it commits. An entry also expires after `ttl`, which bounds how long a
/// read that raced a change can keep serving the older order.
///
/// A change deletes only what may be there: the orders this process put in the cache within `ttl`, and,
/// for `ttl` after it starts, any order (an earlier process may have put it). Order has one writer per
/// order (this process owns its file), so nothing else fills its entries. In a rush hour nearly no order
/// is read back through the cache, and its four or five moves each paid a `DEL` round trip to Redis
/// before answering.
struct OrderCache: Sendable {
    let redis: RedisClient
    let prefix: String
    let ttlSeconds: Int
    private let filled = FilledEntries()
    private let startedAt = ContinuousClock.now

    init(redis: RedisClient, prefix: String, ttlSeconds: Int) {
        self.redis = redis
        self.prefix = prefix
        self.ttlSeconds = ttlSeconds
    }

    func key(_ id: String) -> String { "\(prefix):\(id)" }

    /// How long an entry this process put may still be there (its expiry, and a second for clocks).
    private var holdFor: Duration { .seconds(ttlSeconds + 1) }

    func get(_ id: String) async -> OrderAPI.Order? {
        guard let bytes = try? await redis.send(RedisCommand("GET", key(id))).bytes else { return nil }
        return try? JSONBody.decoder.decode(OrderAPI.Order.self, from: Data(bytes))
    }

    /// Best effort: a cache that cannot be written only costs the next read a trip to SQLite.
    func put(_ order: OrderAPI.Order) async {
        guard let data = try? JSONBody.encoder.encode(order) else { return }
        filled.note(order.id, keepingFor: holdFor)
        _ = try? await redis.send(RedisCommand("SET", key(order.id), Array(data), "EX", ttlSeconds))
    }

    func invalidate(_ id: String) async throws {
        guard ContinuousClock.now - startedAt < holdFor || filled.contains(id, within: holdFor) else { return }
        _ = try await redis.send(RedisCommand("DEL", key(id)))
    }
}

/// The orders this process put in the cache, and when; forgotten once their entries have expired.
final class FilledEntries: Sendable {
    private struct State {
        var at: [String: ContinuousClock.Instant] = [:]
        var notedSincePrune = 0
    }
    private let state = Mutex(State())

    func note(_ id: String, keepingFor hold: Duration) {
        let now = ContinuousClock.now
        state.withLock { state in
            state.at[id] = now
            state.notedSincePrune += 1
            if state.notedSincePrune >= 1024 {
                state.at = state.at.filter { now - $0.value < hold }
                state.notedSincePrune = 0
            }
        }
    }

    func contains(_ id: String, within hold: Duration) -> Bool {
        state.withLock { state in state.at[id].map { ContinuousClock.now - $0 < hold } ?? false }
    }
}
