import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Work a service repeats on a schedule — expiring orders, recovering payments, settlement batches,
/// relaying the outbox, a dispatch window — as one service-lifecycle `Service`.
///
/// - Runs every `interval`, measured from the start of one run to the start of the next (a run longer
///   than the interval is followed by the next at once, never by a pile of missed ones).
/// - A run that answers `.more` (a full batch, more waiting) is followed by the next at once; that is
///   progress, not a spin.
/// - A run that throws is logged and retried after a backoff that doubles from the interval up to
///   `maxBackoff` while failures continue, so a dead dependency is not hammered.
/// - Graceful shutdown ends the wait at once; a run in progress finishes (or stops at its next
///   cancellation point when the task is cancelled); `finalRun` runs the work once more after shutdown
///   began (the outbox publishes what committed before it).
/// - `/metrics` shows, per work name: `hailstorm_periodic_runs_total{work,outcome}` (ok, failed),
///   `hailstorm_periodic_last_run_timestamp_seconds`, `hailstorm_periodic_last_success_timestamp_seconds`,
///   `hailstorm_periodic_consecutive_failures` and `hailstorm_periodic_run_seconds`.
public struct PeriodicWork: Service {
    /// What a run found.
    public enum Outcome: Sendable {
        /// Nothing more to do before the next interval.
        case done
        /// More is waiting: run again at once.
        case more
    }

    public let name: String
    let interval: Duration
    let firstAfter: Duration
    let maxBackoff: Duration
    let finalRun: Bool
    let wait: @Sendable (Duration) async -> Void
    let work: @Sendable () async throws -> Outcome
    let logger: Logger
    let metrics: Instruments

    /// - Parameters:
    ///   - name: the work's name in logs and in the metrics' `work` label.
    ///   - interval: from the start of one run to the start of the next.
    ///   - firstAfter: the wait before the first run (zero: at start).
    ///   - maxBackoff: the longest wait between failed runs.
    ///   - finalRun: run once more after graceful shutdown began.
    ///   - wait: how to wait up to a duration; a custom one may return early (a writer's wake-up). It is
    ///     cancelled at graceful shutdown. Defaults to sleeping.
    ///   - work: one run.
    public init(
        _ name: String,
        every interval: Duration,
        firstAfter: Duration = .zero,
        maxBackoff: Duration = .seconds(30),
        finalRun: Bool = false,
        wait: (@Sendable (Duration) async -> Void)? = nil,
        logger: Logger,
        work: @escaping @Sendable () async throws -> Outcome
    ) {
        self.name = name
        self.interval = max(interval, .milliseconds(1))
        self.firstAfter = firstAfter
        self.maxBackoff = max(maxBackoff, self.interval)
        self.finalRun = finalRun
        self.wait = wait ?? { duration in try? await Task.sleep(for: duration) }
        self.work = work
        self.logger = logger
        self.metrics = Instruments(name)
    }

    /// The same, for work that has no notion of "more".
    public init(
        _ name: String,
        every interval: Duration,
        firstAfter: Duration = .zero,
        maxBackoff: Duration = .seconds(30),
        logger: Logger,
        work: @escaping @Sendable () async throws -> Void
    ) {
        self.init(name, every: interval, firstAfter: firstAfter, maxBackoff: maxBackoff, logger: logger) {
            try await work()
            return .done
        }
    }

    public func run() async throws {
        if firstAfter > .zero { await pause(firstAfter) }
        var failures = 0
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            let started = ContinuousClock.now
            switch await runOnce() {
            case .succeeded(.more):
                failures = 0
                await Task.yield()
                continue
            case .succeeded(.done):
                failures = 0
                let rest = interval - (ContinuousClock.now - started)
                if rest > .zero { await pause(rest) }
            case .failed:
                failures += 1
                await pause(Self.backoff(interval: interval, failures: failures, max: maxBackoff))
            case .cancelled:
                return
            }
        }
        if finalRun, !Task.isCancelled { _ = await runOnce() }
    }

    enum RunResult {
        case succeeded(Outcome)
        case failed
        case cancelled
    }

    /// One run, timed, counted and logged; never throws.
    func runOnce() async -> RunResult {
        let clock = ContinuousClock()
        let started = clock.now
        metrics.lastRun.record(Date().timeIntervalSince1970)
        do {
            let outcome = try await work()
            metrics.duration.recordNanoseconds((clock.now - started).nanosecondsValue)
            metrics.succeeded.increment()
            metrics.lastSuccess.record(Date().timeIntervalSince1970)
            metrics.consecutiveFailures.record(0)
            metrics.failuresInARow.withLock { $0 = 0 }
            return .succeeded(outcome)
        } catch is CancellationError {
            return .cancelled
        } catch {
            metrics.duration.recordNanoseconds((clock.now - started).nanosecondsValue)
            metrics.failed.increment()
            let inARow = metrics.failuresInARow.withLock { count in
                count += 1
                return count
            }
            metrics.consecutiveFailures.record(inARow)
            logger.warning(
                "periodic work failed; retrying after a backoff",
                metadata: ["work": "\(name)", "error": "\(error)", "failures": "\(inARow)"])
            return .failed
        }
    }

    /// Waits, ended early by graceful shutdown.
    private func pause(_ duration: Duration) async {
        let wait = self.wait
        try? await cancelWhenGracefulShutdown { await wait(duration) }
    }

    /// The interval, doubled per failure in a row, capped at `max`.
    public static func backoff(interval: Duration, failures: Int, max cap: Duration) -> Duration {
        var delay = interval
        for _ in 1..<Swift.max(1, Swift.min(failures, 20)) {
            delay = delay * 2
            if delay >= cap { return cap }
        }
        return Swift.min(delay, cap)
    }

    final class Instruments: Sendable {
        let succeeded: Counter
        let failed: Counter
        let lastRun: Gauge
        let lastSuccess: Gauge
        let consecutiveFailures: Gauge
        let duration: Metrics.Timer
        let failuresInARow = Mutex(0)

        init(_ name: String) {
            let work = [("work", name)]
            succeeded = Counter(label: "hailstorm_periodic_runs_total", dimensions: work + [("outcome", "ok")])
            failed = Counter(label: "hailstorm_periodic_runs_total", dimensions: work + [("outcome", "failed")])
            lastRun = Gauge(label: "hailstorm_periodic_last_run_timestamp_seconds", dimensions: work)
            lastSuccess = Gauge(label: "hailstorm_periodic_last_success_timestamp_seconds", dimensions: work)
            consecutiveFailures = Gauge(label: "hailstorm_periodic_consecutive_failures", dimensions: work)
            duration = Metrics.Timer(label: "hailstorm_periodic_run_seconds", dimensions: work)
        }
    }
}
