import Contracts
import Foundation
import HailKit
import Histogram
import NIOCore
import NIOPosix
import Synchronization

/// When requests are due: the arrival schedule of an open-loop run. Due times do not depend on how fast
/// the server answers, so a slow server meets the same offered load (and its slowness shows as latency
/// measured from each request's due time, as wrk2 measures it, instead of hiding as a lower rate).
struct ArrivalSchedule: Sendable {
    enum Profile: String, Sendable, CaseIterable {
        /// `rate` requests per second throughout.
        case constant
        /// From nothing to `rate` in a straight line over the duration.
        case ramp
        /// Four equal steps: a quarter of `rate`, half, three quarters, all of it.
        case step
        /// Three times `rate` in the first second (the opening rush), then `rate`.
        case burst
    }

    let profile: Profile
    let rate: Double
    let duration: Double

    /// The rate due at `t` seconds.
    func rate(at t: Double) -> Double {
        switch profile {
        case .constant: rate
        case .ramp: rate * min(1, max(t, 0) / duration)
        case .step: rate * (Double(min(3, Int(4 * max(t, 0) / duration))) + 1) / 4
        case .burst: t < 1 ? rate * 3 : rate
        }
    }

    /// Every due time, in seconds from the start, in order: the integral of the rate, one request per unit.
    func dueTimes(limit: Int = 50_000_000) -> [Double] {
        var times: [Double] = []
        let step = 0.001
        var owed = 0.0
        var t = 0.0
        while t < duration, times.count < limit {
            let r = rate(at: t)
            let before = owed
            owed += r * step
            // The requests falling inside this millisecond, spread evenly across it.
            let whole = Int(owed) - Int(before)
            for k in 0..<whole { times.append(t + step * (Double(k) + 0.5) / Double(whole)) }
            t += step
        }
        return times
    }
}

/// How one request ended, as the scenario judged it.
enum Outcome: Sendable {
    /// The answer the scenario expected (a claim granted, or refused with a reason it allows).
    case ok(String)
    /// An answer that is wrong for the scenario (a 5xx, a 4xx it does not allow) or no answer.
    case error(String)
}

/// Latencies by endpoint (HdrHistogram, microseconds from the due time), and per second of the run.
final class LatencyRecorder: Sendable {
    struct Second: Sendable {
        var count = 0
        var errors = 0
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    }

    private struct State: Sendable {
        var endpoints: [String: Histogram<UInt64>] = [:]
        /// By second of the run (an array: a run is seconds long, and a dictionary cost a hash per record).
        var seconds: [Second] = []
        var outcomes: [String: Int] = [:]
        var errors: [String: Int] = [:]
        var completed = 0
        var late = 0
    }
    private let state = Mutex(State())

    /// `lateness`: how far behind its due time the request was sent (client-side queueing).
    func record(endpoint: String, second: Int, latencyMicros: UInt64, outcome: Outcome, lateness: Double) {
        state.withLock { state in
            let value = min(latencyMicros, 119_000_000)
            _ = state.endpoints[endpoint, default: Histogram(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)].record(value)
            let second = max(0, second)
            while state.seconds.count <= second { state.seconds.append(Second()) }
            // In place: a copy of the second's histogram per request would copy all its buckets.
            state.seconds[second].count += 1
            _ = state.seconds[second].histogram.record(value)
            state.completed += 1
            if lateness > 0.010 { state.late += 1 }
            switch outcome {
            case .ok(let label): state.outcomes[label, default: 0] += 1
            case .error(let label):
                state.errors[label, default: 0] += 1
                state.seconds[second].errors += 1
            }
        }
    }

    var completed: Int { state.withLock { $0.completed } }
    var errorCount: Int { state.withLock { $0.errors.values.reduce(0, +) } }

    func snapshot() -> (endpoints: [String: Histogram<UInt64>], seconds: [Int: Second], outcomes: [String: Int], errors: [String: Int], late: Int) {
        state.withLock { state in
            var seconds: [Int: Second] = [:]
            for (second, figures) in state.seconds.enumerated() where figures.count > 0 { seconds[second] = figures }
            return (state.endpoints, seconds, state.outcomes, state.errors, state.late)
        }
    }
}

/// Runs an open-loop schedule: each request is started at its due time by a dispatching task, never
/// waiting for earlier answers; at most `maxInFlight` are outstanding (beyond that a due request is
/// counted as `dropped`: the load generator itself could not keep up, which the report says).
///
/// A dispatcher wakes at most once per `tick` (1 ms, the resolution of wrk2's timers) and sends every
/// request due by then: at 5,000 requests a second that is five per wake-up instead of one. A request is
/// thus sent up to a tick after its due time, and its latency, measured from the due time, includes that.
/// A scenario whose request is one call (`Scenario.submit`) sends it on the dispatcher's loop and gets the
/// answer there in a closure, with no task or future per request; the others run `request` as a child
/// task.
///
/// Each dispatcher and every request it starts run on one event loop (`LoopTaskExecutor`), the loop
/// whose connections carry the requests (`GatewayLane`): waiting for a due time is a timer of that loop,
/// and a request, its answer and its record pass between no threads. On the shared pool of Swift's
/// concurrency, with a dispatch timer per due time, each request cost several thread wake-ups, and the
/// generator about 15 times wrk's CPU per request.
struct OpenLoop: Sendable {
    let schedule: ArrivalSchedule
    let maxInFlight: Int
    let recorder: LatencyRecorder
    /// The shortest wait between two wake-ups of a dispatcher.
    var tick: TimeAmount = .milliseconds(1)

    typealias Answer = (endpoint: String, outcome: Outcome)
    /// Request `index` as a task.
    typealias Request = @Sendable (Int) async -> Answer
    /// Sends request `index` on the given loop, the answer handed to the closure there; false (nothing
    /// sent) when it cannot be sent that way.
    typealias Submit = @Sendable (Int, any EventLoop, @escaping @Sendable (Answer) -> Void) -> Bool

    struct Totals: Sendable {
        var due: Int
        var sent: Int
        var dropped: Int
        var elapsed: Double
    }

    func run(submit: Submit? = nil, _ request: @escaping Request) async -> Totals {
        let due = schedule.dueTimes()
        let inFlight = SharedCount()
        let start = NIODeadline.now()
        // A dispatcher per 10,000 requests a second at the schedule's peak (a loop carries about 13,000 on
        // its own), each on a loop of its own with every n-th due time: one loop costs the least per request
        // (its wake-ups each find more to do; two loops cost the bare-http run a third more CPU per request
        // at 5,000/s), sharing the recorder's lock across loops costs more.
        let peak = schedule.profile == .burst ? 3 * schedule.rate : schedule.rate
        let all = Self.loops
        let loops = Array(all.prefix(max(1, min(all.count, Int((peak / 10_000).rounded(.up))))))
        let counts = await withTaskGroup(of: (sent: Int, dropped: Int).self) { group in
            for (lane, loop) in loops.enumerated() {
                group.addTask(executorPreference: LoopTaskExecutor(loop)) {
                    await dispatch(
                        due, from: lane, every: loops.count, start: start, inFlight: inFlight, on: loop,
                        submit: submit, request)
                }
            }
            return await group.reduce(into: (sent: 0, dropped: 0)) { $0.sent += $1.sent; $0.dropped += $1.dropped }
        }
        return Totals(due: due.count, sent: counts.sent, dropped: counts.dropped, elapsed: Self.seconds(.now() - start))
    }

    private func dispatch(
        _ due: [Double], from first: Int, every stride: Int, start: NIODeadline, inFlight: SharedCount,
        on loop: any EventLoop, submit: Submit?, _ request: @escaping Request
    ) async -> (sent: Int, dropped: Int) {
        var dropped = 0
        var sent = 0
        // Requests this dispatcher sent on its loop and is still owed answers for (outside the task group).
        let owed = SharedCount()
        let recorder = recorder
        await withDiscardingTaskGroup { group in
            var index = first
            var lastWake = NIODeadline.now()
            while index < due.count {
                let nextDue = start + .nanoseconds(Int64(due[index] * 1e9))
                if nextDue > .now() {
                    await loop.sleep(until: max(nextDue, lastWake + tick))
                    lastWake = .now()
                }
                let now = NIODeadline.now()
                while index < due.count {
                    let offset = due[index]
                    let dueAt = start + .nanoseconds(Int64(offset * 1e9))
                    guard dueAt <= now else { break }
                    let this = index
                    index += stride
                    guard inFlight.value < maxInFlight else {
                        dropped += 1
                        continue
                    }
                    sent += 1
                    inFlight.add(1)
                    let lateness = Self.seconds(now - dueAt)
                    let finish: @Sendable (Answer) -> Void = { answer in
                        let latency = Self.seconds(.now() - dueAt)
                        recorder.record(
                            endpoint: answer.endpoint, second: Int(offset), latencyMicros: UInt64(max(0, latency * 1e6)),
                            outcome: answer.outcome, lateness: lateness)
                        inFlight.add(-1)
                    }
                    owed.add(1)
                    let sentOnLoop = submit?(this, loop) { answer in
                        finish(answer)
                        owed.add(-1)
                    } ?? false
                    if !sentOnLoop {
                        owed.add(-1)
                        group.addTask { finish(await request(this)) }
                    }
                }
            }
        }
        while owed.value > 0 { await loop.sleep(until: .now() + tick) }
        return (sent, dropped)
    }

    /// The generator's event loops, the first one first: the loop of the first dispatcher, which a
    /// scenario's own requests (a rush hour's fixes, grabs and trips) share, so that one thread carries
    /// them all up to 10,000 requests a second instead of each wake-up crossing threads.
    static let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator())
    static var home: any EventLoop { loops[0] }

    private static func seconds(_ amount: TimeAmount) -> Double {
        Double(amount.nanoseconds) / 1e9
    }
}

extension EventLoop {
    /// Suspends until `deadline` on a timer of this loop (no thread of its own, unlike `Task.sleep`).
    func sleep(until deadline: NIODeadline) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            _ = scheduleTask(deadline: deadline) { continuation.resume() }
        }
    }
}

/// A counter several tasks bump.
final class SharedCount: Sendable {
    private let count = Atomic<Int>(0)

    func add(_ amount: Int) { count.add(amount, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
