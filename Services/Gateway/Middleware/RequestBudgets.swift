import Foundation
import HailKit
import Logging
import RedisKit
import Synchronization

/// Per-client request counts, kept in this gateway instance and carried to Redis in batches, so that a
/// request costs a dictionary lookup instead of a Redis round trip while every instance still counts
/// against one shared budget.
///
/// A client's budget is `limit` requests per fixed window (`window`, aligned to the epoch). Each instance
/// counts its own requests; every `syncInterval` it adds what it counted since the last sync to the
/// window's counter in Redis (`INCRBY`, one pipeline for all clients) and learns the total, its own and
/// the other instances' together. A request is allowed while total + counted here since < limit.
///
/// A client's requests reach Redis only once `syncAfter` of them are counted here in a window: most
/// clients (a rider sends a few requests a second, the limit is hundreds) then never cost Redis a command,
/// and a client that presses on its budget is synced every interval. Counts below `syncAfter` are
/// forgotten with their window.
///
/// What that costs in accuracy: an instance sees the others' requests up to one sync interval late, and
/// never their last `syncAfter − 1`, so a client spread over R instances can get up to (R − 1) × (its rate ×
/// the sync interval + `syncAfter` − 1) requests past the limit in a window — with one instance, none.
/// A refusal is as exact as before.
///
/// `current` is false when the last successful sync is older than `staleAfter` (Redis down or hung):
/// the caller then counts each request in Redis itself, as before, and fails closed with it.
final class RequestBudgets: Sendable {
    struct Entry {
        var window: Int64
        /// The window's total in Redis as last learned (this instance's synced requests included).
        var total: Int
        /// Counted here, not yet sent.
        var unsent: Int
        /// Sent in the sync under way.
        var sending: Int
        /// Whether this window's counter was written from here (its expiry is set with the first write).
        var synced = false
        /// Counted here in this window, synced or not.
        var counted = 0
    }

    enum Decision {
        case allowed(remaining: Int)
        case refused(retryAfterSeconds: Int)
        /// The counts are stale: count this request in Redis.
        case unknown
    }

    let limit: Int
    let windowMilliseconds: Int64
    /// `<prefix>:<scope>`; a window's key is `<prefix>:<scope>:<client>:<window index>`.
    let keyPrefix: String
    let staleAfter: Duration
    /// Requests of a client counted here in a window before they are carried to Redis (1: every one).
    let syncAfter: Int
    struct State {
        var entries: [String: Entry] = [:]
        /// Clients with requests not yet sent.
        var dirty: [String] = []
        var lastSync: ContinuousClock.Instant?
        /// The window up to which past entries were forgotten.
        var prunedWindow: Int64 = 0
    }

    private let state = Mutex(State())

    init(limit: Int, window: Duration, keyPrefix: String, staleAfter: Duration = .seconds(1), syncAfter: Int = 1) {
        self.limit = limit
        self.syncAfter = max(1, syncAfter)
        self.windowMilliseconds = max(1, Int64(window.components.seconds) * 1000 + window.components.attoseconds / 1_000_000_000_000_000)
        self.keyPrefix = keyPrefix
        self.staleAfter = staleAfter
    }

    static func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// The Redis key of `client`'s counter in the window holding `milliseconds`.
    func key(_ client: String, at milliseconds: Int64) -> String {
        "\(keyPrefix):\(client):\(milliseconds / windowMilliseconds)"
    }

    /// Seconds until the window holding `milliseconds` ends, at least 1.
    func retryAfter(at milliseconds: Int64) -> Int {
        let left = windowMilliseconds - milliseconds % windowMilliseconds
        return max(1, Int((left + 999) / 1000))
    }

    /// Counts one request of `client` if its budget allows it.
    func take(_ client: String, at milliseconds: Int64 = nowMilliseconds()) -> Decision {
        let window = milliseconds / windowMilliseconds
        return state.withLock { state in
            guard let last = state.lastSync, ContinuousClock.now - last < staleAfter else { return .unknown }
            var entry = state.entries[client] ?? Entry(window: window, total: 0, unsent: 0, sending: 0)
            if entry.window != window { entry = Entry(window: window, total: 0, unsent: 0, sending: 0) }
            let count = entry.total + entry.sending + entry.unsent + 1
            guard count <= limit else {
                state.entries[client] = entry
                return .refused(retryAfterSeconds: retryAfter(at: milliseconds))
            }
            entry.unsent += 1
            entry.counted += 1
            // Dirty from its `syncAfter`th request in the window; afterwards from each first unsent one.
            if entry.counted >= syncAfter && (entry.unsent == 1 || entry.counted == syncAfter) { state.dirty.append(client) }
            state.entries[client] = entry
            return .allowed(remaining: limit - count)
        }
    }

    /// Uncounts one request `take` allowed, when it is handed to a path that counts it again.
    func giveBack(_ client: String, at milliseconds: Int64 = nowMilliseconds()) {
        let window = milliseconds / windowMilliseconds
        state.withLock { state in
            guard var entry = state.entries[client], entry.window == window, entry.unsent > 0 else { return }
            entry.unsent -= 1
            entry.counted -= 1
            state.entries[client] = entry
        }
    }

    /// A window total read from Redis outside a sync (a request counted there while the counts here were
    /// stale): kept, so the requests counted here next are added to it.
    func observe(_ client: String, total: Int, at milliseconds: Int64) {
        let window = milliseconds / windowMilliseconds
        state.withLock { state in
            var entry = state.entries[client] ?? Entry(window: window, total: 0, unsent: 0, sending: 0)
            if entry.window != window { entry = Entry(window: window, total: 0, unsent: 0, sending: 0) }
            entry.total = max(entry.total, total)
            state.entries[client] = entry
        }
    }

    /// Sends what was counted since the last sync and learns the totals; forgets past windows.
    func sync(redis: RedisClient, at milliseconds: Int64 = nowMilliseconds()) async throws {
        let window = milliseconds / windowMilliseconds
        let batch: [(client: String, window: Int64, count: Int, first: Bool)] = state.withLock { state in
            if state.prunedWindow < window - 1 {
                state.entries = state.entries.filter { $0.value.window >= window - 1 || $0.value.unsent > 0 }
                state.prunedWindow = window - 1
            }
            var batch: [(String, Int64, Int, Bool)] = []
            batch.reserveCapacity(state.dirty.count)
            for client in state.dirty {
                guard var entry = state.entries[client], entry.unsent > 0 else { continue }
                batch.append((client, entry.window, entry.unsent, !entry.synced))
                entry.sending = entry.unsent
                entry.unsent = 0
                state.entries[client] = entry
            }
            state.dirty.removeAll(keepingCapacity: true)
            return batch
        }
        guard !batch.isEmpty else {
            _ = try await redis.send("PING")
            state.withLock { $0.lastSync = ContinuousClock.now }
            return
        }
        let expiry = String(2 * windowMilliseconds)
        var commands: [RedisCommand] = []
        commands.reserveCapacity(batch.count * 2)
        // Where each client's INCRBY reply is: its window's first write from here also sets the expiry.
        var replyIndex: [Int] = []
        replyIndex.reserveCapacity(batch.count)
        for item in batch {
            let key = "\(keyPrefix):\(item.client):\(item.window)"
            replyIndex.append(commands.count)
            commands.append(RedisCommand("INCRBY", key, String(item.count)))
            if item.first { commands.append(RedisCommand("PEXPIRE", key, expiry)) }
        }
        let replies: [RESPValue]
        do {
            replies = try await redis.pipeline(commands)
        } catch {
            // Not counted in Redis: count it again next time.
            state.withLock { state in
                for item in batch {
                    guard var entry = state.entries[item.client], entry.window == item.window else { continue }
                    if entry.unsent == 0 { state.dirty.append(item.client) }
                    entry.unsent += entry.sending
                    entry.sending = 0
                    state.entries[item.client] = entry
                }
            }
            throw error
        }
        state.withLock { state in
            for (index, item) in batch.enumerated() {
                guard var entry = state.entries[item.client], entry.window == item.window else { continue }
                entry.total = replies[replyIndex[index]].int ?? entry.total + entry.sending
                entry.sending = 0
                entry.synced = true
                state.entries[item.client] = entry
            }
            state.lastSync = ContinuousClock.now
        }
    }

    /// The sync as periodic work, every `interval`; a failed sync is retried within a second.
    func periodicSync(redis: RedisClient, every interval: Duration, logger: Logger) -> PeriodicWork {
        PeriodicWork("rate-limit-sync", every: interval, maxBackoff: .seconds(1), logger: logger) {
            try await self.sync(redis: redis)
        }
    }
}
