import NIOCore
import NIOPosix
import Testing

@testable import HailKit

/// The deadline watch every service answers requests under: a request past its deadline has its work
/// cancelled, and requests that finish in time cost no wake-ups of their own.
@Suite("Deadline watch")
struct DeadlineWatchTests {
    @Test("a task past its deadline is cancelled; one that finished in time is left alone")
    func cancelsLateWork() async throws {
        let watch = DeadlineWatch(loop: MultiThreadedEventLoopGroup.singleton.next())
        let started = ContinuousClock.now
        let late = Task {
            let id = withUnsafeCurrentTask { watch.watch(until: .now() + .milliseconds(40), task: $0!) }
            defer { watch.unwatch(id) }
            try await Task.sleep(for: .seconds(5))
        }
        await #expect(throws: CancellationError.self) { try await late.value }
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(40) && waited < .seconds(2), "cancelled after \(waited)")

        let prompt = Task {
            let id = withUnsafeCurrentTask { watch.watch(until: .now() + .milliseconds(60), task: $0!) }
            watch.unwatch(id)
            try await Task.sleep(for: .milliseconds(150))
        }
        try await prompt.value
    }

    @Test("a thousand requests that finish in time set one timer, not a sweep every few milliseconds")
    func quietWhileInTime() async throws {
        let watch = DeadlineWatch(loop: MultiThreadedEventLoopGroup.singleton.next())
        for _ in 0..<1000 {
            await Task {
                let id = withUnsafeCurrentTask { watch.watch(until: .now() + .milliseconds(200), task: $0!) }
                watch.unwatch(id)
            }.value
        }
        // A sweep every 10 ms would have fired about 30 times by now. (More than one only when this
        // machine was so slow that the timer fired while a request was still watched.)
        try await Task.sleep(for: .milliseconds(300))
        let fired = watch.timersFired
        #expect((1...3).contains(fired), "\(fired) timers fired")
        // An earlier deadline sets a timer of its own; a later one does not.
        await Task {
            let first = withUnsafeCurrentTask { watch.watch(until: .now() + .milliseconds(100), task: $0!) }
            let earlier = withUnsafeCurrentTask { watch.watch(until: .now() + .milliseconds(50), task: $0!) }
            let later = withUnsafeCurrentTask { watch.watch(until: .now() + .milliseconds(80), task: $0!) }
            for id in [first, earlier, later] { watch.unwatch(id) }
        }.value
        try await Task.sleep(for: .milliseconds(250))
        #expect(watch.timersFired == fired + 2)
    }
}
