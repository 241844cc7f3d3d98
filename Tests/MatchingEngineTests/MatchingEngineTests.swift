import HailKitTesting
import Testing
@testable import MatchingEngine

/// The minimum total over every way to give each of the n rows a distinct column (n ≤ m ≤ 8).
func bruteForceMinimum(_ cost: [[Double]]) -> Double {
    let n = cost.count, m = cost.first?.count ?? 0
    var best = Double.infinity
    var used = [Bool](repeating: false, count: m)
    func go(_ row: Int, _ total: Double) {
        if total >= best { return }
        if row == n { best = total; return }
        for j in 0..<m where !used[j] {
            used[j] = true
            go(row + 1, total + cost[row][j])
            used[j] = false
        }
    }
    go(0, 0)
    return best
}

func randomPoints(_ count: Int, side: Double, _ rng: inout SeededGenerator, grid: Double? = nil) -> [PlanePoint] {
    (0..<count).map { _ in
        var x = Double.random(in: 0..<side, using: &rng)
        var y = Double.random(in: 0..<side, using: &rng)
        if let grid {
            // Snap to a lattice: many exact ties and points on cell borders.
            x = (x / grid).rounded() * grid
            y = (y / grid).rounded() * grid
        }
        return PlanePoint(x: x, y: y)
    }
}

@Suite("Assignment")
struct AssignmentTests {
    @Test("exact mode equals brute force on hundreds of small instances, with ties, both shapes")
    func exactEqualsBruteForce() {
        var rng = SeededGenerator(1)
        for trial in 0..<400 {
            let n = Int.random(in: 1...8, using: &rng)
            let m = Int.random(in: 1...8, using: &rng)
            // A third of the instances sit on a coarse lattice, so equal distances are common.
            let lattice: Double? = trial % 3 == 0 ? 1.0 : nil
            let orders = randomPoints(n, side: 6, &rng, grid: lattice)
            let drivers = randomPoints(m, side: 6, &rng, grid: lattice)
            let snapshot = DriverSnapshot(drivers: (0..<m).map { DriverID(UInt64($0)) }, positions: drivers)
            let result = Dispatcher(configuration: .init(mode: .exact, candidates: 2)).assign(orders, drivers: snapshot)

            let expected: Double
            if n <= m {
                expected = bruteForceMinimum(orders.map { o in drivers.map { o.distance(to: $0) } })
            } else {
                expected = bruteForceMinimum(drivers.map { d in orders.map { d.distance(to: $0) } })
            }
            #expect(result.matched == min(n, m), "trial \(trial)")
            #expect(abs(result.totalCost - expected) <= 1e-9 * max(1, expected), "trial \(trial): \(result.totalCost) vs \(expected)")
            // Each driver at most once, and the reported costs are the real distances.
            let used = result.driverOfOrder.filter { $0 >= 0 }
            #expect(Set(used).count == used.count)
            for (i, j) in result.driverOfOrder.enumerated() where j >= 0 {
                #expect(abs(result.pickupKm[i] - orders[i].distance(to: drivers[Int(j)])) < 1e-12)
            }
        }
    }

    @Test("the dense baseline and the sparse exact solver agree on larger instances, square and clustered")
    func sparseEqualsDense() {
        var rng = SeededGenerator(2)
        for (n, m) in [(60, 60), (80, 120), (30, 300), (100, 100)] {
            // Clustered demand: most orders in one corner, drivers everywhere, so the optimum needs long edges.
            var orders = randomPoints(n, side: 10, &rng)
            for i in 0..<(n * 2 / 3) { orders[i] = PlanePoint(x: orders[i].x / 8, y: orders[i].y / 8) }
            let drivers = randomPoints(m, side: 10, &rng)
            let snapshot = DriverSnapshot(drivers: (0..<m).map { DriverID(UInt64($0)) }, positions: drivers)
            let exact = Dispatcher(configuration: .init(mode: .exact)).assign(orders, drivers: snapshot)
            let dense = Dispatcher(configuration: .init(mode: .dense)).assign(orders, drivers: snapshot)
            #expect(exact.matched == n)
            #expect(abs(exact.totalCost - dense.totalCost) <= 1e-9 * dense.totalCost, "\(n)x\(m)")
            #expect(exact.solveRounds > 1 || n < m, "a square clustered instance needs the proof to add edges")
        }
    }

    @Test("greedy, the baseline, loses to exact on a crafted instance")
    func greedyIsTheBaseline() {
        // Greedy takes the 1 km pair first and leaves the second order a 4.5 km pickup (5.5 in all);
        // exact pays 1.5 + 2.
        let orders = [PlanePoint(x: 0, y: 0), PlanePoint(x: 3, y: 0)]
        let drivers = [PlanePoint(x: 1, y: 0), PlanePoint(x: -1.5, y: 0)]
        let snapshot = DriverSnapshot(drivers: [DriverID(1), DriverID(2)], positions: drivers)
        let greedy = Dispatcher(configuration: .init(mode: .greedy)).assign(orders, drivers: snapshot)
        let exact = Dispatcher(configuration: .init(mode: .exact)).assign(orders, drivers: snapshot)
        #expect(abs(greedy.totalCost - 5.5) < 1e-12)
        #expect(abs(exact.totalCost - 3.5) < 1e-12)
    }

    @Test("fast mode defers orders with no driver inside the pickup radius and reports them")
    func fastModeDefers() {
        let drivers = [PlanePoint(x: 0, y: 0), PlanePoint(x: 0.5, y: 0), PlanePoint(x: 40, y: 40)]
        let snapshot = DriverSnapshot(drivers: [DriverID(10), DriverID(11), DriverID(12)], positions: drivers)
        let orders = [
            DispatchOrder(id: OrderID(1), pickup: PlanePoint(x: 0.1, y: 0)),
            DispatchOrder(id: OrderID(2), pickup: PlanePoint(x: 0.4, y: 0)),
            DispatchOrder(id: OrderID(3), pickup: PlanePoint(x: 20, y: 20)),  // 28 km from the nearest
        ]
        let result = Dispatcher(configuration: .init(mode: .fast, maxPickupKm: 5)).dispatch(orders, drivers: snapshot)
        #expect(result.deferred == [OrderID(3)])
        #expect(Set(result.assignments.map(\.driver)) == [DriverID(10), DriverID(11)])
        #expect(result.assignments.allSatisfy { $0.pickupKm <= 5 })
        // Exact mode matches every order when drivers suffice, however far.
        let exact = Dispatcher(configuration: .init(mode: .exact)).dispatch(orders, drivers: snapshot)
        #expect(exact.deferred.isEmpty)
        #expect(exact.assignments.count == 3)
    }

    @Test("fewer drivers than orders: every driver is used, the rest of the orders deferred")
    func fewerDrivers() {
        var rng = SeededGenerator(3)
        let orders = randomPoints(7, side: 5, &rng)
        let drivers = randomPoints(3, side: 5, &rng)
        let snapshot = DriverSnapshot(drivers: (0..<3).map { DriverID(UInt64($0)) }, positions: drivers)
        let dispatched = Dispatcher().dispatch(
            orders.enumerated().map { DispatchOrder(id: OrderID(UInt64($0.offset)), pickup: $0.element) },
            drivers: snapshot)
        #expect(dispatched.assignments.count == 3)
        #expect(dispatched.deferred.count == 4)
        // Fast mode too: every driver used once, the other orders reported as deferred.
        let fast = Dispatcher(configuration: .init(mode: .fast, maxPickupKm: 50)).dispatch(
            orders.enumerated().map { DispatchOrder(id: OrderID(UInt64($0.offset)), pickup: $0.element) },
            drivers: snapshot)
        #expect(Set(fast.assignments.map(\.driver)).count == 3)
        #expect(fast.deferred.count == 4)
        #expect(Set(fast.assignments.map(\.order)).isDisjoint(with: fast.deferred))
    }
}
