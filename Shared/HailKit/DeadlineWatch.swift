import NIOCore
import NIOPosix
import Synchronization

/// Cancels the tasks of requests whose deadline has passed, for every request of the process at once: one
/// sweep every `interval` on one event loop while anything is watched, instead of a timer per request.
/// (Scheduling a timer on an event loop from another thread and cancelling it again woke that loop twice
/// per request: about a fifth of a claim's CPU in the coupon service.) A deadline is acted on up to
/// `interval` late.
///
/// A watched task is the task answering a request (a connection's task: `HailResponder` runs the
/// handler in it). It is held unretained, so it is cancelled only while it is watched: `unwatch` and the
/// sweep's cancelling take the same lock, and the task unwatches before its request ends. Cancellation
/// handlers run in the sweep, under that lock: they must not watch or unwatch.
final class DeadlineWatch: Sendable {
    static let shared = DeadlineWatch(loop: MultiThreadedEventLoopGroup.singleton.next(), interval: .milliseconds(10))

    /// A task to cancel, held unretained (see above).
    struct Watched: @unchecked Sendable {
        let task: UnsafeCurrentTask
    }

    private struct State {
        var nextID: UInt64 = 0
        var watched: [UInt64: (deadline: NIODeadline, task: Watched)] = [:]
        var sweeping = false
        /// Sweeps in a row that found nothing watched; the sweep stops after a second of them.
        var idleSweeps = 0
    }

    private let loop: any EventLoop
    private let interval: TimeAmount
    private let state = Mutex(State())

    init(loop: any EventLoop, interval: TimeAmount) {
        self.loop = loop
        self.interval = interval
    }

    /// Cancels `task` once `deadline` has passed, unless `unwatch` comes first. Returns the watch's id.
    func watch(until deadline: NIODeadline, task: UnsafeCurrentTask) -> UInt64 {
        let (id, start) = state.withLock { state in
            state.nextID &+= 1
            state.watched[state.nextID] = (deadline, Watched(task: task))
            state.idleSweeps = 0
            let start = !state.sweeping
            state.sweeping = true
            return (state.nextID, start)
        }
        if start {
            loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [self] task in sweep(task) }
        }
        return id
    }

    func unwatch(_ id: UInt64) {
        state.withLock { _ = $0.watched.removeValue(forKey: id) }
    }

    private func sweep(_ task: RepeatedTask) {
        let now = NIODeadline.now()
        let idleLimit = Int(1_000_000_000 / max(1, interval.nanoseconds))
        state.withLock { state in
            guard !state.watched.isEmpty else {
                state.idleSweeps += 1
                if state.idleSweeps >= idleLimit {
                    state.sweeping = false
                    task.cancel()
                }
                return
            }
            for (id, watched) in state.watched where watched.deadline <= now {
                state.watched.removeValue(forKey: id)
                watched.task.task.cancel()
            }
        }
    }
}
