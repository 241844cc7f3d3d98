import NIOConcurrencyHelpers

/// The state of one instance's breaker.
public enum BreakerState: Sendable, Hashable {
    /// Calls flow.
    case closed
    /// Calls are refused without trying, until the cool-down ends.
    case open
    /// The cool-down ended: one trial call is let through; its outcome closes or re-opens the breaker.
    case halfOpen
}

/// A circuit breaker per instance: after `threshold` consecutive failures an instance gets no calls for
/// `cooldown`, then one trial call decides whether it is back.
public final class CircuitBreakers: Sendable {
    private struct Entry {
        var consecutiveFailures = 0
        var openedAt: ContinuousClock.Instant?
        var trialInFlight = false
    }

    public let threshold: Int
    public let cooldown: Duration
    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    public init(threshold: Int, cooldown: Duration) {
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
    }

    public func state(of instance: String) -> BreakerState {
        entries.withLockedValue { entries in
            guard let entry = entries[instance], let openedAt = entry.openedAt else { return .closed }
            return ContinuousClock.now < openedAt + cooldown ? .open : .halfOpen
        }
    }

    /// Whether a call may go to `instance` now; in half-open state only the first asker gets a yes.
    public func allow(_ instance: String) -> Bool {
        entries.withLockedValue { entries in
            guard var entry = entries[instance], let openedAt = entry.openedAt else { return true }
            if ContinuousClock.now < openedAt + cooldown { return false }
            if entry.trialInFlight { return false }
            entry.trialInFlight = true
            entries[instance] = entry
            return true
        }
    }

    /// Whether `instance` could take a call (without claiming the half-open trial).
    func isCandidate(_ instance: String) -> Bool {
        entries.withLockedValue { entries in
            guard let entry = entries[instance], let openedAt = entry.openedAt else { return true }
            return ContinuousClock.now >= openedAt + cooldown && !entry.trialInFlight
        }
    }

    public func recordSuccess(_ instance: String) {
        entries.withLockedValue { entries in
            entries[instance] = nil
        }
    }

    public func recordFailure(_ instance: String) {
        entries.withLockedValue { entries in
            var entry = entries[instance] ?? Entry()
            entry.consecutiveFailures += 1
            if entry.trialInFlight || entry.consecutiveFailures >= threshold {
                entry.openedAt = .now
                entry.trialInFlight = false
            }
            entries[instance] = entry
        }
    }
}
