import NIOCore
import NIOPosix
import Synchronization

/// Cancels the tasks of requests whose deadline has passed, for every request of the process at once: one
/// timer on one event loop, set for the earliest deadline watched, instead of a timer per request.
/// (Scheduling a timer on an event loop from another thread and cancelling it again woke that loop twice
/// per request: about a fifth of a claim's CPU in the coupon service. A sweep every 10 ms while anything
/// was watched woke every busy service's loop a hundred times a second, and an idle one whenever a health
/// check or a scrape came by.)
///
/// Deadlines are seconds away and requests finish in milliseconds, so the timer is set rarely: when a
/// request is watched while none is set, or with a deadline earlier than the one set (a caller's shorter
/// budget). It is never cancelled: when it fires it cancels the tasks past their deadline and is set
/// again for the earliest deadline still watched, if any. A timer superseded by an earlier one still fires
/// once, finds nothing or little to do, and sets nothing the earliest one has not.
///
/// A watched task is the task answering a request (a connection's task: `HailResponder` runs the
/// handler in it). It is held unretained, so it is cancelled only while it is watched: `unwatch` and the
/// timer's cancelling take the same lock, and the task unwatches before its request ends. Cancellation
/// handlers run under that lock: they must not watch or unwatch.
final class DeadlineWatch: Sendable {
    static let shared = DeadlineWatch(loop: MultiThreadedEventLoopGroup.singleton.next())

    /// A task to cancel, held unretained (see above).
    struct Watched: @unchecked Sendable {
        let task: UnsafeCurrentTask
    }

    private struct State {
        var nextID: UInt64 = 0
        var watched: [UInt64: (deadline: NIODeadline, task: Watched)] = [:]
        /// When the earliest timer set fires; nil when none is set.
        var timerAt: NIODeadline?
        /// Timers that fired so far.
        var fired = 0
    }

    private let loop: any EventLoop
    private let state = Mutex(State())

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// Cancels `task` once `deadline` has passed, unless `unwatch` comes first. Returns the watch's id.
    func watch(until deadline: NIODeadline, task: UnsafeCurrentTask) -> UInt64 {
        let (id, setTimer) = state.withLock { state in
            state.nextID &+= 1
            state.watched[state.nextID] = (deadline, Watched(task: task))
            guard state.timerAt.map({ deadline < $0 }) ?? true else { return (state.nextID, false) }
            state.timerAt = deadline
            return (state.nextID, true)
        }
        if setTimer { schedule(at: deadline) }
        return id
    }

    func unwatch(_ id: UInt64) {
        state.withLock { _ = $0.watched.removeValue(forKey: id) }
    }

    /// Timers fired so far.
    var timersFired: Int { state.withLock { $0.fired } }

    private func schedule(at deadline: NIODeadline) {
        loop.scheduleTask(deadline: deadline) { [self] in fire(setFor: deadline) }
    }

    private func fire(setFor firedAt: NIODeadline) {
        let now = NIODeadline.now()
        let next = state.withLock { state -> NIODeadline? in
            state.fired += 1
            if state.timerAt == firedAt { state.timerAt = nil }
            var earliest: NIODeadline?
            for (id, watched) in state.watched {
                if watched.deadline <= now {
                    state.watched.removeValue(forKey: id)
                    watched.task.task.cancel()
                } else if earliest.map({ watched.deadline < $0 }) ?? true {
                    earliest = watched.deadline
                }
            }
            guard let earliest, state.timerAt.map({ earliest < $0 }) ?? true else { return nil }
            state.timerAt = earliest
            return earliest
        }
        if let next { schedule(at: next) }
    }
}
