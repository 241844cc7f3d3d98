/// How a window's orders are matched to drivers.
public enum DispatchMode: String, Sendable, CaseIterable, Codable {
    /// The true minimum total pickup distance. Every order is matched when there are at least as many
    /// drivers as orders (otherwise every driver is, to the orders that make the total smallest).
    case exact
    /// Each order's k nearest drivers within the pickup radius, solved optimally on those candidates plus
    /// the edges three rounds of the exact mode's dual check add; orders with no acceptable driver are
    /// deferred to the next window.
    case fast
    /// Nearest pair first. The baseline the other modes are measured against; not for production.
    case greedy
    /// The exact optimum by the dense solver over the full cost matrix. The baseline for exact mode.
    case dense
}

public struct DispatchConfiguration: Sendable, Hashable {
    public var mode: DispatchMode
    /// Candidates per order; `nil` adapts k to the ratio of drivers to orders.
    public var candidates: Int?
    /// Fast mode: a driver further than this is not offered the order (km).
    public var maxPickupKm: Double

    public init(mode: DispatchMode = .exact, candidates: Int? = nil, maxPickupKm: Double = 5) {
        self.mode = mode
        self.candidates = candidates
        self.maxPickupKm = maxPickupKm
    }
}

public struct DispatchOrder: Sendable, Hashable {
    public var id: OrderID
    public var pickup: PlanePoint
    public init(id: OrderID, pickup: PlanePoint) {
        self.id = id
        self.pickup = pickup
    }
}

public struct Assignment: Sendable, Hashable {
    public var order: OrderID
    public var driver: DriverID
    public var pickupKm: Double
}

/// What a window decided, with the figures the matching service exports.
public struct DispatchResult: Sendable {
    public var assignments: [Assignment]
    /// Orders left for the next window: no acceptable driver (fast mode), or fewer drivers than orders.
    public var deferred: [OrderID]
    public var totalPickupKm: Double
    /// Candidate edges the final solve used.
    public var candidateEdges: Int
    /// Exact mode: solves run until the duals proved the candidate graph's optimum optimal overall.
    public var solveRounds: Int
    /// Exact mode: edges added because the proof failed on them or a row could not be matched.
    public var addedEdges: Int
}

/// Index results of a solve: the column (driver position in the snapshot) of each order, or -1.
public struct IndexAssignment: Sendable {
    public var driverOfOrder: [Int32]
    public var pickupKm: [Double]
    public var candidateEdges = 0
    public var solveRounds = 1
    public var addedEdges = 0

    public var matched: Int { driverOfOrder.count { $0 >= 0 } }
    public var totalCost: Double {
        var t = 0.0
        for (i, j) in driverOfOrder.enumerated() where j >= 0 { t += pickupKm[i] }
        return t
    }
}

/// Batch dispatch: candidates from the drivers' snapshot, then a min-cost assignment.
public struct Dispatcher: Sendable {
    public var configuration: DispatchConfiguration

    public init(configuration: DispatchConfiguration = .init()) {
        self.configuration = configuration
    }

    public func dispatch(_ orders: [DispatchOrder], drivers: DriverSnapshot) -> DispatchResult {
        let solved = assign(orders.map(\.pickup), drivers: drivers)
        var assignments: [Assignment] = []
        var deferred: [OrderID] = []
        assignments.reserveCapacity(solved.matched)
        for (i, order) in orders.enumerated() {
            let j = Int(solved.driverOfOrder[i])
            if j >= 0 {
                assignments.append(Assignment(order: order.id, driver: drivers.drivers[j], pickupKm: solved.pickupKm[i]))
            } else {
                deferred.append(order.id)
            }
        }
        return DispatchResult(
            assignments: assignments, deferred: deferred, totalPickupKm: solved.totalCost,
            candidateEdges: solved.candidateEdges, solveRounds: solved.solveRounds, addedEdges: solved.addedEdges)
    }

    /// The same on positions only: what the benchmark times.
    public func assign(_ pickups: [PlanePoint], drivers: DriverSnapshot) -> IndexAssignment {
        let n = pickups.count, m = drivers.count
        if n == 0 || m == 0 {
            return IndexAssignment(driverOfOrder: .init(repeating: -1, count: n), pickupKm: .init(repeating: 0, count: n))
        }
        switch configuration.mode {
        case .exact:
            if m >= n {
                return ExactSolve(rows: pickups, columns: drivers.grid, k: candidates(n, m, exact: true)).run()
            }
            // Fewer drivers than orders: every driver is matched; solve with drivers as rows.
            let orderGrid = PackedGrid(positions: pickups)
            let transposed = ExactSolve(rows: drivers.positions, columns: orderGrid, k: candidates(m, n, exact: true)).run()
            var result = IndexAssignment(
                driverOfOrder: .init(repeating: -1, count: n), pickupKm: .init(repeating: 0, count: n))
            for (d, o) in transposed.driverOfOrder.enumerated() where o >= 0 {
                result.driverOfOrder[Int(o)] = Int32(d)
                result.pickupKm[Int(o)] = transposed.pickupKm[d]
            }
            result.candidateEdges = transposed.candidateEdges
            result.solveRounds = transposed.solveRounds
            result.addedEdges = transposed.addedEdges
            return result
        case .fast:
            return fast(pickups, drivers: drivers)
        case .greedy:
            return greedy(pickups, drivers: drivers)
        case .dense:
            return dense(pickups, drivers: drivers)
        }
    }

    /// k adapted to supply: plenty of drivers per order means each order's nearest few already hold its
    /// optimal partner; a balanced window needs a wider net. Exact mode can start narrower than fast mode
    /// because its proof adds whatever edge the optimum turns out to need.
    func candidates(_ rows: Int, _ columns: Int, exact: Bool) -> Int {
        if let k = configuration.candidates { return max(1, min(k, columns)) }
        let ratio = Double(columns) / Double(rows)
        let k: Int
        switch ratio {
        case 4...: k = exact ? 5 : 8
        case 2..<4: k = exact ? 7 : 10
        case 1.3..<2: k = exact ? 9 : 12
        default: k = exact ? 12 : 12
        }
        return min(k, columns)
    }

    private func fast(_ pickups: [PlanePoint], drivers: DriverSnapshot) -> IndexAssignment {
        let n = pickups.count, m = drivers.count
        var solve = ExactSolve(rows: pickups, columns: drivers.grid, k: candidates(n, m, exact: false))
        solve.maxCost = configuration.maxPickupKm
        solve.maxRounds = Self.fastRounds
        return solve.run()
    }

    /// Fast mode's solves per window: the first on the candidates, then up to three more with the edges the
    /// duals ask for most. Most of the gap to the optimum closes in those, most of the time of a proof is
    /// spent after them.
    static let fastRounds = 4

    private func greedy(_ pickups: [PlanePoint], drivers: DriverSnapshot) -> IndexAssignment {
        let n = pickups.count, m = drivers.count
        var pairs: [(Double, Int32, Int32)] = []
        pairs.reserveCapacity(n * m)
        let positions = drivers.positions
        for i in 0..<n {
            for j in 0..<m { pairs.append((pickups[i].distance(to: positions[j]), Int32(i), Int32(j))) }
        }
        pairs.sort { $0.0 < $1.0 }
        var result = IndexAssignment(driverOfOrder: .init(repeating: -1, count: n), pickupKm: .init(repeating: 0, count: n))
        var taken = [Bool](repeating: false, count: m)
        var matched = 0
        for (d, i, j) in pairs where result.driverOfOrder[Int(i)] < 0 && !taken[Int(j)] {
            result.driverOfOrder[Int(i)] = j
            result.pickupKm[Int(i)] = d
            taken[Int(j)] = true
            matched += 1
            if matched == min(n, m) { break }
        }
        result.candidateEdges = n * m
        return result
    }

    private func dense(_ pickups: [PlanePoint], drivers: DriverSnapshot) -> IndexAssignment {
        let n = pickups.count, m = drivers.count
        let positions = drivers.positions
        var result = IndexAssignment(driverOfOrder: .init(repeating: -1, count: n), pickupKm: .init(repeating: 0, count: n))
        result.candidateEdges = n * m
        if n <= m {
            var cost = [Double](repeating: 0, count: n * m)
            for i in 0..<n { for j in 0..<m { cost[i * m + j] = pickups[i].distance(to: positions[j]) } }
            let columns = DenseAssignmentSolver().solve(cost: cost, rows: n, columns: m)
            for i in 0..<n {
                result.driverOfOrder[i] = Int32(columns[i])
                result.pickupKm[i] = cost[i * m + columns[i]]
            }
        } else {
            var cost = [Double](repeating: 0, count: n * m)
            for j in 0..<m { for i in 0..<n { cost[j * n + i] = pickups[i].distance(to: positions[j]) } }
            let orders = DenseAssignmentSolver().solve(cost: cost, rows: m, columns: n)
            for j in 0..<m {
                result.driverOfOrder[orders[j]] = Int32(j)
                result.pickupKm[orders[j]] = cost[j * n + orders[j]]
            }
        }
        return result
    }
}
