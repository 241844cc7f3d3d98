import Contracts
import Foundation
import MatchingEngine
import RedisKit
import Synchronization

/// The drivers this instance dispatches: the engine's live index (positions and availability) plus the
/// map between account ids and the engine's dense driver numbers, and a copy of each driver's last fix
/// and state in Redis so a restarted instance rebuilds the index in seconds instead of waiting for every
/// driver's next fix.
///
/// Redis keys (prefix `matching` by default): `<prefix>:geo` (GEO set of last positions), `<prefix>:seen`
/// (sorted set: the time of each driver's last fix), `<prefix>:online`, `<prefix>:busy` and
/// `<prefix>:suspended` (sets of account ids; a suspended driver is out of dispatch until restored).
///
/// A driver whose app stopped sending (a dead phone, a crashed app) must not be dispatched forever: an
/// available driver without a fix for `staleAfter` seconds is taken offline, here and in Redis.
final class DriverFleet: Sendable {
    let live: LiveDriverIndex
    let projection: LocalProjection
    let redis: RedisClient
    let prefix: String
    let staleAfter: Double
    private struct Names {
        var byAccount: [String: DriverID] = [:]
        var accounts: [String] = [""]  // index 0 unused: driver numbers start at 1
        var online: Set<DriverID> = []
        var busy: Set<DriverID> = []
        /// Taken out of dispatch by an operator.
        var suspended: Set<DriverID> = []
        /// The order a busy driver is on, when known: only that order's end frees the driver.
        var trips: [DriverID: String] = [:]
        var lastSeen: [DriverID: Double] = [:]

        mutating func number(of account: String) -> DriverID {
            if let id = byAccount[account] { return id }
            let id = DriverID(UInt64(accounts.count))
            byAccount[account] = id
            accounts.append(account)
            return id
        }
    }
    private let names = Mutex(Names())
    /// Fixes not yet copied to Redis, the latest per driver (`copyFixes`).
    private let unsaved = Mutex<[String: Fix]>([:])

    init(live: LiveDriverIndex, projection: LocalProjection, redis: RedisClient, prefix: String, staleAfter: Duration) {
        self.live = live
        self.projection = projection
        self.redis = redis
        self.prefix = prefix
        self.staleAfter = Double(staleAfter.components.seconds)
    }

    var geoKey: String { "\(prefix):geo" }
    var seenKey: String { "\(prefix):seen" }
    var onlineKey: String { "\(prefix):online" }
    var busyKey: String { "\(prefix):busy" }
    var suspendedKey: String { "\(prefix):suspended" }
    /// Hash: busy driver → the order they are on.
    var tripsKey: String { "\(prefix):busy:trips" }

    /// The engine's number of an account, made on first sight.
    func number(of account: String) -> DriverID {
        names.withLock { $0.number(of: account) }
    }

    func account(of driver: DriverID) -> String? {
        names.withLock { names in
            let index = Int(driver.rawValue)
            return index > 0 && index < names.accounts.count ? names.accounts[index] : nil
        }
    }

    private func availability(_ id: DriverID) -> DriverAvailability {
        names.withLock { names in
            names.busy.contains(id) ? .busy : names.online.contains(id) && !names.suspended.contains(id) ? .available : .offline
        }
    }

    /// Records a fix: in the index at once; its copy in Redis with the next `copyFixes`.
    func locate(_ account: String, at point: GeoPoint) async throws {
        let id = number(of: account)
        let now = Date().timeIntervalSince1970
        names.withLock { $0.lastSeen[id] = now }
        _ = live.upsert(id, at: projection.project(Self.coordinate(point)), availability: availability(id))
        unsaved.withLock { $0[account] = Fix(lon: point.lon, lat: point.lat, at: now) }
    }

    /// Whether Redis's GEO sets take the point: latitudes beyond ±85.05112878° (the poles, where no city
    /// dispatches) are refused, and one refused point fails its whole `GEOADD`. Such a fix is kept in the
    /// index but not in the copy, so a restart does not find that driver until their next fix.
    static func redisCanStore(_ fix: Fix) -> Bool {
        abs(fix.lat) <= 85.05112878 && abs(fix.lon) <= 180
    }

    /// A driver's last fix, waiting to be copied to Redis.
    struct Fix: Sendable {
        var lon: Double
        var lat: Double
        var at: Double
    }

    /// Copies the fixes received since the last call to Redis (each driver's latest), in one pipeline of
    /// `GEOADD`s and `ZADD`s of up to 1,000 drivers each; returns how many drivers it copied. On failure
    /// they wait for the next call (behind any newer fix of the same driver).
    ///
    /// A fix is in the index, and dispatched on, the moment it arrives; Redis's copy serves only to
    /// rebuild the index after a restart, so it is written in batches (`matching.fix.copy.ms`) instead of
    /// one round trip per fix: a crash loses the copies of at most that much time of fixes, and the
    /// restarted index has those drivers where they were one fix earlier until their next fix.
    @discardableResult
    func copyFixes() async throws -> Int {
        let batch = unsaved.withLock { fixes -> [String: Fix] in
            let taken = fixes
            fixes.removeAll(keepingCapacity: true)
            return taken
        }
        guard !batch.isEmpty else { return 0 }
        var commands: [RedisCommand] = []
        let drivers = Array(batch)
        var start = 0
        while start < drivers.count {
            let chunk = drivers[start..<min(start + 1000, drivers.count)]
            start += chunk.count
            var geo: [any RESPArgumentConvertible] = [geoKey]
            var seen: [any RESPArgumentConvertible] = [seenKey]
            geo.reserveCapacity(1 + chunk.count * 3)
            seen.reserveCapacity(1 + chunk.count * 2)
            for (account, fix) in chunk {
                if Self.redisCanStore(fix) { geo.append(contentsOf: [fix.lon, fix.lat, account] as [any RESPArgumentConvertible]) }
                seen.append(contentsOf: [fix.at, account] as [any RESPArgumentConvertible])
            }
            if geo.count > 1 { commands.append(RedisCommand("GEOADD", geo)) }
            commands.append(RedisCommand("ZADD", seen))
        }
        do {
            try await redis.sendAll(commands)
        } catch {
            unsaved.withLock { fixes in
                for (account, fix) in batch where fixes[account] == nil { fixes[account] = fix }
            }
            throw error
        }
        return batch.count
    }

    func goOnline(_ account: String) async throws {
        let id = number(of: account)
        let now = Date().timeIntervalSince1970
        names.withLock {
            _ = $0.online.insert(id)
            $0.lastSeen[id] = now
        }
        _ = live.setAvailability(id, availability(id))
        // Online is kept at once, with the position it went online at (a restart right after must find
        // the driver where they are); later fixes are copied in batches.
        let fix = unsaved.withLock { $0.removeValue(forKey: account) }
        var commands = [RedisCommand("SADD", onlineKey, account), RedisCommand("ZADD", seenKey, now, account)]
        if let fix, Self.redisCanStore(fix) { commands.append(RedisCommand("GEOADD", geoKey, fix.lon, fix.lat, account)) }
        do {
            try await redis.sendAll(commands)
        } catch {
            if let fix { unsaved.withLock { fixes in if fixes[account] == nil { fixes[account] = fix } } }
            throw error
        }
    }

    func isSuspended(_ account: String) -> Bool {
        let id = number(of: account)
        return names.withLock { $0.suspended.contains(id) }
    }

    /// Takes a driver out of dispatch (or back in): kept in Redis first, so a restart keeps it. A trip
    /// under way goes on; its end leaves the driver out. False when it was so already.
    @discardableResult
    func setSuspended(_ suspended: Bool, _ account: String) async throws -> Bool {
        let id = number(of: account)
        _ = try await redis.send(RedisCommand(suspended ? "SADD" : "SREM", suspendedKey, account))
        let changed = names.withLock { names in
            suspended ? names.suspended.insert(id).inserted : names.suspended.remove(id) != nil
        }
        _ = live.setAvailability(id, availability(id))
        return changed
    }

    /// Takes offline the available drivers whose last fix is older than `staleAfter`; returns them.
    func sweepStale(now: Double = Date().timeIntervalSince1970) async throws -> [String] {
        let cutoff = now - staleAfter
        let stale = names.withLock { names in
            names.online.filter { !names.busy.contains($0) && (names.lastSeen[$0] ?? 0) < cutoff }
        }
        var accounts: [String] = []
        for id in stale {
            guard let account = account(of: id) else { continue }
            try await goOffline(account)
            accounts.append(account)
        }
        return accounts
    }

    func goOffline(_ account: String) async throws {
        let id = number(of: account)
        names.withLock { _ = $0.online.remove(id) }
        _ = live.setAvailability(id, availability(id))
        _ = try await redis.send(RedisCommand("SREM", onlineKey, account))
    }

    /// On an order (assigned by this instance or by a grab): out of dispatch until the trip ends.
    /// The driver took `order`.
    func markBusy(_ account: String, order: String) async throws {
        try await apply([.took(driver: account, order: order)])
    }

    /// `order` ended: its driver is free again, unless they are on another order by now (the end of an
    /// earlier trip delivered late must not free a driver in the middle of the next one). False when
    /// nothing changed.
    @discardableResult
    func markFree(_ account: String, order: String) async throws -> Bool {
        try await apply([.ended(driver: account, order: order)]) == 1
    }

    /// A driver's trip starting or ending, as the order stream tells it.
    enum TripChange: Sendable {
        case took(driver: String, order: String)
        case ended(driver: String, order: String)

        var driver: String {
            switch self {
            case .took(let driver, _), .ended(let driver, _): driver
            }
        }
    }

    /// Whether this fleet has the driver: a position of theirs, or a trip it follows (an account only
    /// asked about, as every city of a split matching is, is not had).
    func has(_ account: String) -> Bool {
        let (id, onTrip) = names.withLock { names in
            let id = names.byAccount[account]
            return (id, id.map { names.trips[$0] != nil } ?? false)
        }
        guard let id else { return false }
        return onTrip || live.read { $0.position(of: id) } != nil
    }

    /// Applies `changes` in order, with Redis's copy updated in one pipeline; returns how many took
    /// effect (the end of a trip the driver is no longer on changes nothing).
    @discardableResult
    func apply(_ changes: [TripChange]) async throws -> Int {
        var commands: [RedisCommand] = []
        var applied = 0
        for change in changes {
            switch change {
            case .took(let account, let order):
                let id = number(of: account)
                names.withLock { names in
                    names.busy.insert(id)
                    names.trips[id] = order
                }
                _ = live.setAvailability(id, .busy)
                applied += 1
                commands.append(RedisCommand("SADD", busyKey, account))
                commands.append(RedisCommand("HSET", tripsKey, account, order))
            case .ended(let account, let order):
                let id = number(of: account)
                let freed = names.withLock { names -> Bool in
                    if let current = names.trips[id], current != order { return false }
                    names.busy.remove(id)
                    names.trips[id] = nil
                    return true
                }
                guard freed else { continue }
                _ = live.setAvailability(id, availability(id))
                applied += 1
                commands.append(RedisCommand("SREM", busyKey, account))
                commands.append(RedisCommand("HDEL", tripsKey, account))
            }
        }
        if !commands.isEmpty { _ = try await redis.pipeline(commands) }
        return applied
    }

    /// Takes back a claim a window made that the order service did not confirm.
    func release(_ driver: DriverID) {
        _ = live.setAvailability(driver, availability(driver))
    }

    func status(_ account: String) -> MatchingAPI.DriverStatus {
        status(of: number(of: account), account: account)
    }

    private func status(of id: DriverID, account: String) -> MatchingAPI.DriverStatus {
        var state: String
        switch live.read({ $0.availability(of: id) }) {
        case .available: state = "available"
        case .busy: state = "busy"
        case .offline, nil: state = "offline"
        }
        if names.withLock({ $0.suspended.contains(id) }) { state = "suspended" }
        let position = live.read({ $0.position(of: id) }).map { projection.unproject($0) }
        return MatchingAPI.DriverStatus(driverID: account, state: state, lat: position?.latitude, lon: position?.longitude)
    }

    /// Every driver online now, with their state and last position (none before their first fix), in
    /// account order.
    func onlineDrivers() -> [MatchingAPI.DriverStatus] {
        names.withLock { $0.online }.compactMap { id in account(of: id).map { status(of: id, account: $0) } }
            .sorted { $0.driverID < $1.driverID }
    }

    func hasPosition(_ account: String) -> Bool {
        let id = number(of: account)
        return live.read { $0.position(of: id) } != nil
    }

    var counts: (known: Int, available: Int) {
        live.read { ($0.count, $0.availableCount) }
    }

    /// Rebuilds the index from Redis's copy: every last fix, then who is online and who is busy.
    func restore() async throws -> Int {
        let online = Set((try await redis.send(RedisCommand("SMEMBERS", onlineKey)).array ?? []).compactMap(\.string))
        let busy = Set((try await redis.send(RedisCommand("SMEMBERS", busyKey)).array ?? []).compactMap(\.string))
        let suspended = (try await redis.send(RedisCommand("SMEMBERS", suspendedKey)).array ?? []).compactMap(\.string)
        let tripsReply = try await redis.send(RedisCommand("HGETALL", tripsKey)).array ?? []
        var trips: [String: String] = [:]
        for pair in stride(from: 0, to: tripsReply.count - 1, by: 2) {
            if let account = tripsReply[pair].string, let order = tripsReply[pair + 1].string { trips[account] = order }
        }
        let members = (try await redis.send(RedisCommand("ZRANGE", geoKey, 0, -1)).array ?? []).compactMap(\.string)
        let seenReply = try await redis.send(RedisCommand("ZRANGE", seenKey, 0, -1, "WITHSCORES")).array ?? []
        var seen: [String: Double] = [:]
        for pair in stride(from: 0, to: seenReply.count - 1, by: 2) {
            if let account = seenReply[pair].string, let at = seenReply[pair + 1].double { seen[account] = at }
        }
        names.withLock { names in
            for account in suspended { names.suspended.insert(names.number(of: account)) }
            for account in members {
                let id = names.number(of: account)
                if online.contains(account) { names.online.insert(id) }
                if busy.contains(account) {
                    names.busy.insert(id)
                    names.trips[id] = trips[account]
                }
                if let at = seen[account] { names.lastSeen[id] = at }
            }
        }
        var restored = 0
        var start = 0
        while start < members.count {
            let chunk = Array(members[start..<min(start + 1000, members.count)])
            start += chunk.count
            let positions = try await redis.send(RedisCommand("GEOPOS", [geoKey] + chunk)).array ?? []
            for (account, position) in zip(chunk, positions) {
                guard let pair = position.array, pair.count == 2, let lon = pair[0].double, let lat = pair[1].double else { continue }
                let id = number(of: account)
                if live.upsert(id, at: projection.project(GeoCoordinate(latitude: lat, longitude: lon)), availability: availability(id)) {
                    restored += 1
                }
            }
        }
        return restored
    }

    static func coordinate(_ point: GeoPoint) -> GeoCoordinate { GeoCoordinate(latitude: point.lat, longitude: point.lon) }
}
