import Synchronization

/// Who analytics has recorded as seen (`seen`, one row per kind, minute, place and person) in the newest
/// two minutes, as committed: a sighting already there skips its `INSERT OR IGNORE`, which would change
/// nothing. A driver's fixes arrive every few seconds, so within a minute most of a driver's city-wide
/// sightings (`driver-city`, `available-city`) repeat; each skipped is a statement of the batch's
/// transaction the writer does not run.
///
/// What is remembered was committed: a batch notes the sightings it inserts (`Batch`), and they join
/// only after its transaction did (`commit`); a batch that failed is dropped with them. Deleting rows of
/// `seen` (a rebuild's wipe, retention) forgets everything (`forget`), and a batch that began before
/// that adds nothing. Only the newest two minutes are kept (events arrive nearly in order; an older
/// sighting takes the table's way), and never more than `capacity` sightings.
final class SeenRecently: Sendable {
    struct Key: Hashable, Sendable {
        let kind: String
        let minute: Int
        let city: String
        let cell: String
        let id: String
    }

    /// The sightings one write inserts, kept back until it commits.
    final class Batch: Sendable {
        let recent: SeenRecently
        fileprivate let generation: Int
        fileprivate let inserted = Mutex<[Key]>([])

        fileprivate init(recent: SeenRecently, generation: Int) {
            self.recent = recent
            self.generation = generation
        }

        func note(_ key: Key) {
            inserted.withLock { $0.append(key) }
        }
    }

    private struct State {
        var generation = 0
        var newest = Int.min
        var keys: Set<Key> = []
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int = 400_000) {
        self.capacity = capacity
    }

    /// A batch for a write about to begin.
    func batch() -> Batch {
        Batch(recent: self, generation: state.withLock { $0.generation })
    }

    /// Whether the sighting is known to be in `seen` already.
    func contains(_ key: Key) -> Bool {
        state.withLock { $0.keys.contains(key) }
    }

    var count: Int { state.withLock { $0.keys.count } }

    /// The batch's transaction committed: its sightings are in the table.
    func commit(_ batch: Batch) {
        let inserted = batch.inserted.withLock { $0 }
        guard !inserted.isEmpty else { return }
        var dropped: Set<Key>? = nil
        state.withLock { state in
            guard state.generation == batch.generation else { return }
            let newest = inserted.reduce(state.newest) { max($0, $1.minute) }
            if newest > state.newest {
                state.newest = newest
                let kept = state.keys.filter { $0.minute >= newest - 1 }
                dropped = state.keys
                state.keys = kept
            }
            for key in inserted where key.minute >= state.newest - 1 {
                state.keys.insert(key)
            }
            if state.keys.count > capacity {
                dropped = state.keys
                state.keys = []
            }
        }
        withExtendedLifetime(dropped) {}
    }

    /// Rows of `seen` were deleted: nothing is known any more, and batches begun before this add nothing.
    func forget() {
        let dropped = state.withLock { state in
            state.generation += 1
            state.newest = Int.min
            defer { state.keys = [] }
            return state.keys
        }
        withExtendedLifetime(dropped) {}
    }
}
