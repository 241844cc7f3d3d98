import Foundation
import HailKit
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// The one periodic-work primitive every background job runs on: what an operator would notice is a job
/// that hammers a dead dependency, one that holds up a shutdown, or one whose failures do not show.
@Suite struct PeriodicWorkTests {
    let logger = Logger(label: "periodic-work-test")

    init() {
        _ = HailMetrics.registry  // the Prometheus backend, as a service installs it at start
    }

    @Test func failingWorkBacksOffInsteadOfSpinning() async throws {
        let calls = Mutex(0)
        let work = PeriodicWork("test-failing", every: .milliseconds(10), maxBackoff: .milliseconds(160), logger: logger) {
            calls.withLock { $0 += 1 }
            throw TestFailure()
        }
        let group = ServiceGroup(configuration: .init(services: [work], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await Task.sleep(for: .seconds(1))
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        // Without backoff a throwing job runs ~100 times a second at this interval; with it, 10, 20, 40, 80,
        // then 160 ms apart: about ten runs in the second.
        let count = calls.withLock { $0 }
        #expect(count >= 3, "the failing work is retried")
        #expect(count <= 20, "ran \(count) times in a second: it spins instead of backing off")
        let metrics = String(decoding: HailMetrics.render(), as: UTF8.self)
        #expect(metrics.contains(#"hailstorm_periodic_runs_total{work="test-failing",outcome="failed"} \#(count)"#))
        #expect(metrics.contains(#"hailstorm_periodic_consecutive_failures{work="test-failing"}"#))
    }

    @Test func moreRunsAgainAtOnceAndDoneWaitsTheInterval() async throws {
        let calls = Mutex(0)
        let work = PeriodicWork("test-more", every: .seconds(3600), logger: logger) { () async throws -> PeriodicWork.Outcome in
            let n = calls.withLock { count in
                count += 1
                return count
            }
            return n < 4 ? .more : .done
        }
        let group = ServiceGroup(configuration: .init(services: [work], logger: logger))
        let clock = ContinuousClock()
        let started = clock.now
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            // Four runs back to back, then the hour's wait, which graceful shutdown must cut short.
            while calls.withLock({ $0 }) < 4, clock.now - started < .seconds(10) { try await Task.sleep(for: .milliseconds(10)) }
            try await Task.sleep(for: .milliseconds(200))
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(calls.withLock { $0 } == 4, "three full batches, one last: then it waits the interval")
        #expect(clock.now - started < .seconds(10), "graceful shutdown ends the wait at once, not after the interval")
        let metrics = String(decoding: HailMetrics.render(), as: UTF8.self)
        #expect(metrics.contains(#"hailstorm_periodic_runs_total{work="test-more",outcome="ok"} 4"#))
        #expect(metrics.contains(#"hailstorm_periodic_last_success_timestamp_seconds{work="test-more"}"#))
    }

    @Test func backoffDoublesUpToItsCap() {
        #expect(PeriodicWork.backoff(interval: .seconds(1), failures: 1, max: .seconds(30)) == .seconds(1))
        #expect(PeriodicWork.backoff(interval: .seconds(1), failures: 3, max: .seconds(30)) == .seconds(4))
        #expect(PeriodicWork.backoff(interval: .seconds(1), failures: 50, max: .seconds(30)) == .seconds(30))
    }

    struct TestFailure: Error {}
}
