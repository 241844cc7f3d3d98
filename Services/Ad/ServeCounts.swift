import Synchronization

/// Serving figures per campaign and hour (requests, eligible, throttled, capped, served, and tokens sent
/// again), counted in
/// memory as ads are served and added to SQLite every couple of seconds (`AdStore.add`): a counter in
/// Redis per request and campaign would cost a round trip each. A crash loses at most the figures of the
/// last flush interval; impressions, clicks and spend are not among them (Redis counts those).
final class ServeCounts: Sendable {
    struct Key: Hashable, Sendable {
        var campaign: String
        /// The hour's start, in seconds since 1970.
        var hour: Double

        init(campaign: String, at time: Double) {
            self.campaign = campaign
            self.hour = (time / 3600).rounded(.down) * 3600
        }
    }

    struct Figures: Sendable, Equatable {
        var requests = 0
        var eligible = 0
        var throttled = 0
        var capped = 0
        var served = 0
        /// Impressions and clicks sent again (counted once, refused after).
        var duplicates = 0

        mutating func add(_ other: Figures) {
            requests += other.requests
            eligible += other.eligible
            throttled += other.throttled
            capped += other.capped
            served += other.served
            duplicates += other.duplicates
        }
    }

    private let pending = Mutex<(counts: [Key: Figures], pacing: [Key: Double])>(([:], [:]))

    func add(_ key: Key, _ change: (inout Figures) -> Void) {
        pending.withLock { pending in
            var figures = pending.counts[key] ?? Figures()
            change(&figures)
            pending.counts[key] = figures
        }
    }

    func setPacingIndex(_ index: Double, for key: Key) {
        pending.withLock { $0.pacing[key] = index }
    }

    /// What was counted since the last take; `giveBack` returns it when it could not be stored.
    func take() -> (counts: [Key: Figures], pacing: [Key: Double]) {
        pending.withLock { pending in
            defer { pending = ([:], [:]) }
            return pending
        }
    }

    func giveBack(_ taken: (counts: [Key: Figures], pacing: [Key: Double])) {
        pending.withLock { pending in
            for (key, figures) in taken.counts { pending.counts[key, default: Figures()].add(figures) }
            for (key, index) in taken.pacing where pending.pacing[key] == nil { pending.pacing[key] = index }
        }
    }
}
