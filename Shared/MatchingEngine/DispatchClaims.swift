import Synchronization

/// Who holds which driver and which order. A claim takes both at once or neither, under one lock, so a
/// driver is never given two orders and an order never two drivers, however many tasks claim at once.
public final class DispatchClaims: Sendable {
    public enum Outcome: Sendable, Hashable {
        case claimed
        /// The driver already holds that order.
        case driverTaken(by: OrderID)
        /// The order already has that driver.
        case orderTaken(by: DriverID)
        /// The driver is not available any more (went offline or busy since the window's snapshot).
        case driverUnavailable
    }

    private struct State {
        var orderOfDriver: [DriverID: OrderID] = [:]
        var driverOfOrder: [OrderID: DriverID] = [:]

        mutating func claim(_ order: OrderID, _ driver: DriverID) -> Outcome {
            if let holder = driverOfOrder[order] { return holder == driver ? .claimed : .orderTaken(by: holder) }
            if let held = orderOfDriver[driver] { return .driverTaken(by: held) }
            driverOfOrder[order] = driver
            orderOfDriver[driver] = order
            return .claimed
        }
    }

    private let state = Mutex(State())

    public init() {}

    /// Claims `driver` for `order`. Claiming the same pair again answers `.claimed` (retries are safe).
    public func claim(order: OrderID, driver: DriverID) -> Outcome {
        state.withLock { $0.claim(order, driver) }
    }

    /// Claims a window's assignments under one lock.
    public func claim(_ assignments: [Assignment]) -> [Outcome] {
        state.withLock { state in assignments.map { state.claim($0.order, $0.driver) } }
    }

    /// Ends an order's claim (trip over or cancelled) and frees its driver. Returns the driver it held.
    @discardableResult
    public func release(order: OrderID) -> DriverID? {
        state.withLock { state in
            guard let driver = state.driverOfOrder.removeValue(forKey: order) else { return nil }
            state.orderOfDriver[driver] = nil
            return driver
        }
    }

    public func driver(of order: OrderID) -> DriverID? { state.withLock { $0.driverOfOrder[order] } }
    public func order(of driver: DriverID) -> OrderID? { state.withLock { $0.orderOfDriver[driver] } }
    public var count: Int { state.withLock { $0.driverOfOrder.count } }
}

/// The driver index shared between the tasks that ingest locations and the dispatch window.
///
/// Updates hold the lock for the time it takes to apply one batch; a window holds it only to copy the
/// index (O(1): the copy shares storage until the next write) and to commit its claims, and does all its
/// solving on the copy.
public final class LiveDriverIndex: Sendable {
    private let index: Mutex<DriverIndex>

    public init(_ index: DriverIndex) {
        self.index = Mutex(index)
    }

    @discardableResult
    public func upsert(_ driver: DriverID, at point: PlanePoint, availability: DriverAvailability) -> Bool {
        index.withLock { $0.upsert(driver, at: point, availability: availability) }
    }

    /// Applies a batch of moves; unknown drivers and non-finite points are skipped and counted.
    @discardableResult
    public func apply(_ moves: some Sequence<(DriverID, PlanePoint)>) -> Int {
        index.withLock { index in
            var unknown = 0
            for (driver, point) in moves where !index.update(driver, to: point) { unknown += 1 }
            return unknown
        }
    }

    @discardableResult
    public func setAvailability(_ driver: DriverID, _ availability: DriverAvailability) -> Bool {
        index.withLock { $0.setAvailability(driver, availability) }
    }

    public func remove(_ driver: DriverID) { index.withLock { $0.remove(driver) } }

    /// Reads the index under its lock, without copying it.
    public func read<T>(_ body: (DriverIndex) -> T) -> T { index.withLock { body($0) } }

    /// A consistent copy of the index at this instant.
    public func copy() -> DriverIndex { index.withLock { $0 } }

    /// The available drivers, packed for a window.
    public func snapshot() -> DriverSnapshot { copy().snapshot() }

    public func nearest(to point: PlanePoint, k: Int) -> [Neighbor] {
        index.withLock { $0.nearest(to: point, k: k) }
    }

    /// Commits a window's assignments: each driver must still be available, then the claim is taken and
    /// the driver marked busy, all under the index's lock so no update or other window interleaves.
    public func commit(_ assignments: [Assignment], claims: DispatchClaims) -> [DispatchClaims.Outcome] {
        index.withLock { index in
            assignments.map { assignment in
                guard index.availability(of: assignment.driver) == .available else { return .driverUnavailable }
                let outcome = claims.claim(order: assignment.order, driver: assignment.driver)
                if outcome == .claimed { index.setAvailability(assignment.driver, .busy) }
                return outcome
            }
        }
    }
}
