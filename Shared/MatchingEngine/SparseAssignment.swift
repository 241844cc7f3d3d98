/// A bipartite graph of rows (orders) and columns (drivers) in compressed rows: the edges of row `i` are
/// `rowStart[i] ..< rowStart[i + 1]`, each a column and a cost.
public struct BipartiteGraph: Sendable {
    public let rows: Int
    public let columns: Int
    public private(set) var rowStart: [Int32]
    public private(set) var column: [Int32]
    public private(set) var cost: [Double]

    public init(rows: Int, columns: Int, rowStart: [Int32], column: [Int32], cost: [Double]) {
        precondition(rowStart.count == rows + 1 && column.count == cost.count)
        self.rows = rows
        self.columns = columns
        self.rowStart = rowStart
        self.column = column
        self.cost = cost
    }

    public var edgeCount: Int { column.count }
}

/// The outcome of a solve: the matching and the dual prices that prove it optimal.
///
/// Duals follow `cost(i, j) − u(i) − v(j) ≥ 0` on every edge, with equality on matched edges; every
/// column starts at `v = 0` and only matched columns are ever lowered, so unmatched columns keep
/// `v = 0 ≥ v` of every matched column. Together these are the linear program's optimality certificate
/// for "match every row, each column at most once" (rectangular assignment).
public struct AssignmentSolution: Sendable {
    /// Column of each row, or -1 for a row left unmatched.
    public var columnOfRow: [Int32]
    /// Row of each column, or -1.
    public var rowOfColumn: [Int32]
    /// Cost of each row's matched edge (undefined for unmatched rows).
    public var matchedCost: [Double]
    /// Column duals.
    public var v: [Double]
    /// Rows for which no augmenting path existed in the graph.
    public var unmatchedRows: [Int]

    /// Row dual of a matched row.
    @inline(__always)
    public func u(_ row: Int) -> Double {
        let c = Int(columnOfRow[row])
        return matchedCost[row] - v[c]
    }

    public var totalCost: Double {
        var total = 0.0
        for i in columnOfRow.indices where columnOfRow[i] >= 0 { total += matchedCost[i] }
        return total
    }

    public var matchedCount: Int { columnOfRow.count { $0 >= 0 } }
}

/// Minimum-cost assignment on a sparse graph by successive shortest augmenting paths (Dijkstra with
/// the duals as potentials, as in Jonker–Volgenant), after a row-reduction start that matches every row
/// whose cheapest column is still free.
///
/// A row with no augmenting path is left unmatched and reported; the search for the others goes on
/// (a row that cannot be augmented now never can be later, so skipping it loses nothing).
///
/// The workspace arrays are sized once per solve and reset by generation stamps, so a search costs only
/// what it touches.
public struct SparseAssignmentSolver {
    public init() {}

    /// Solves from nothing: every column starts at `v = 0`.
    public func solve(_ graph: BipartiteGraph) -> AssignmentSolution {
        let n = graph.rows, m = graph.columns
        let empty = AssignmentSolution(
            columnOfRow: .init(repeating: -1, count: n), rowOfColumn: .init(repeating: -1, count: m),
            matchedCost: .init(repeating: 0, count: n), v: .init(repeating: 0, count: m),
            unmatchedRows: [])
        return solve(graph, startingFrom: empty)
    }

    /// Continues from an earlier solution of a graph that has since gained edges (never lost any), after
    /// unmatching `release`: only unmatched rows are searched for.
    ///
    /// Why this is sound: the searches keep every edge's reduced cost non-negative and every matched edge
    /// tight whatever the starting column duals are, provided those hold at the start — which releasing
    /// the rows whose new edges broke them ensures (a released row's dual is recomputed by its search).
    /// For a square problem that is the whole optimality certificate. With more columns than rows it also
    /// needs every free column's dual to be at least every matched column's; a cold solve keeps that by
    /// construction, and a warm one must be checked (`isRectangularCertificateValid`).
    public func solve(
        _ graph: BipartiteGraph, startingFrom start: AssignmentSolution, release: some Sequence<Int> = [Int]()
    ) -> AssignmentSolution {
        let n = graph.rows, m = graph.columns
        var colOfRow = start.columnOfRow
        var rowOfCol = start.rowOfColumn
        var matchedCost = start.matchedCost
        var v = start.v
        var unmatched: [Int] = []
        precondition(colOfRow.count == n && rowOfCol.count == m)
        for r in release where colOfRow[r] >= 0 {
            rowOfCol[Int(colOfRow[r])] = -1
            colOfRow[r] = -1
        }

        var pending: [Int] = []
        graph.rowStart.withUnsafeBufferPointer { rowStart in
            graph.column.withUnsafeBufferPointer { column in
                graph.cost.withUnsafeBufferPointer { cost in
                    // Row reduction: u(i) = min over the row of cost − v; take that column if it is free.
                    for i in 0..<n where colOfRow[i] < 0 {
                        var best = -1
                        var bestReduced = Double.infinity
                        for e in Int(rowStart[i])..<Int(rowStart[i + 1]) {
                            let reduced = cost[e] - v[Int(column[e])]
                            if reduced < bestReduced {
                                bestReduced = reduced
                                best = e
                            }
                        }
                        if best >= 0, rowOfCol[Int(column[best])] < 0 {
                            let j = Int(column[best])
                            rowOfCol[j] = Int32(i)
                            colOfRow[i] = Int32(j)
                            matchedCost[i] = cost[best]
                        } else {
                            pending.append(i)
                        }
                    }

                    var search = PathSearch(columns: m)
                    for first in pending {
                        search.augment(
                            from: first, rowStart: rowStart, column: column, cost: cost,
                            colOfRow: &colOfRow, rowOfCol: &rowOfCol, matchedCost: &matchedCost, v: &v,
                            unmatched: &unmatched)
                    }
                }
            }
        }
        return AssignmentSolution(
            columnOfRow: colOfRow, rowOfColumn: rowOfCol, matchedCost: matchedCost, v: v,
            unmatchedRows: unmatched)
    }
}

extension AssignmentSolution {
    /// With more columns than rows, optimality also needs every free column's dual to be at least every
    /// matched column's (the duals of the "at most once" constraints are then normalisable to ≤ 0 with
    /// free columns at 0).
    func isRectangularCertificateValid(tolerance: Double) -> Bool {
        var maxMatched = -Double.infinity
        var minFree = Double.infinity
        for j in v.indices {
            if rowOfColumn[j] >= 0 { maxMatched = max(maxMatched, v[j]) } else { minFree = min(minFree, v[j]) }
        }
        return minFree >= maxMatched - tolerance
    }
}

/// Dijkstra workspace for one solve.
struct PathSearch {
    var distance: [Double]
    var seen: [UInt32]
    var done: [UInt32]
    var predecessorRow: [Int32]
    var predecessorCost: [Double]
    var scanned: [Int32] = []
    var heap = MinHeap()
    var generation: UInt32 = 0

    init(columns: Int) {
        distance = [Double](repeating: 0, count: columns)
        seen = [UInt32](repeating: 0, count: columns)
        done = [UInt32](repeating: 0, count: columns)
        predecessorRow = [Int32](repeating: -1, count: columns)
        predecessorCost = [Double](repeating: 0, count: columns)
    }

    mutating func augment(
        from start: Int,
        rowStart: UnsafeBufferPointer<Int32>, column: UnsafeBufferPointer<Int32>, cost: UnsafeBufferPointer<Double>,
        colOfRow: inout [Int32], rowOfCol: inout [Int32], matchedCost: inout [Double], v: inout [Double],
        unmatched: inout [Int]
    ) {
        generation &+= 1
        let gen = generation
        heap.removeAll()
        scanned.removeAll(keepingCapacity: true)
        var sink = -1
        var delta = 0.0

        distance.withUnsafeMutableBufferPointer { dist in
        seen.withUnsafeMutableBufferPointer { seen in
        done.withUnsafeMutableBufferPointer { done in
        predecessorRow.withUnsafeMutableBufferPointer { predRow in
        predecessorCost.withUnsafeMutableBufferPointer { predCost in
        v.withUnsafeBufferPointer { v in
        rowOfCol.withUnsafeBufferPointer { rowOfCol in
        matchedCost.withUnsafeBufferPointer { matchedCost in
            // Distances are reduced path lengths up to a constant (the start row's dual is left out).
            @inline(__always) func relax(row: Int, base: Double) {
                for e in Int(rowStart[row])..<Int(rowStart[row + 1]) {
                    let j = Int(column[e])
                    if done[j] == gen { continue }
                    let nd = base + cost[e] - v[j]
                    if seen[j] != gen || nd < dist[j] {
                        seen[j] = gen
                        dist[j] = nd
                        predRow[j] = Int32(row)
                        predCost[j] = cost[e]
                        heap.push(nd, Int32(j))
                    }
                }
            }
            relax(row: start, base: 0)
            while let (d, j32) = heap.pop() {
                let j = Int(j32)
                if done[j] == gen || d > dist[j] { continue }
                done[j] = gen
                let r = Int(rowOfCol[j])
                if r < 0 {
                    sink = j
                    delta = d
                    break
                }
                scanned.append(j32)
                // Through column j to the row holding it (a tight edge), then out along that row's edges.
                let u = matchedCost[r] - v[j]
                relax(row: r, base: d - u)
            }
        }}}}}}}}

        if sink < 0 {
            unmatched.append(start)
            return
        }
        for j32 in scanned {
            let j = Int(j32)
            v[j] += distance[j] - delta
        }
        var j = sink
        while true {
            let r = Int(predecessorRow[j])
            let next = Int(colOfRow[r])
            colOfRow[r] = Int32(j)
            rowOfCol[j] = Int32(r)
            matchedCost[r] = predecessorCost[j]
            if r == start { break }
            j = next
        }
    }
}

/// A binary min-heap of (key, column) with lazy deletion: stale entries are skipped by the caller.
struct MinHeap {
    var keys: [Double] = []
    var values: [Int32] = []

    mutating func removeAll() {
        keys.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    mutating func push(_ key: Double, _ value: Int32) {
        keys.append(key)
        values.append(value)
        var i = keys.count - 1
        keys.withUnsafeMutableBufferPointer { k in
            values.withUnsafeMutableBufferPointer { val in
                while i > 0 {
                    let p = (i - 1) >> 1
                    if k[p] <= key { break }
                    k[i] = k[p]
                    val[i] = val[p]
                    i = p
                }
                k[i] = key
                val[i] = value
            }
        }
    }

    @inline(__always)
    mutating func pop() -> (Double, Int32)? {
        guard let lastKey = keys.popLast(), let lastValue = values.popLast() else { return nil }
        if keys.isEmpty { return (lastKey, lastValue) }
        let top = (keys[0], values[0])
        let n = keys.count
        keys.withUnsafeMutableBufferPointer { k in
            values.withUnsafeMutableBufferPointer { val in
                var i = 0
                while true {
                    var c = 2 * i + 1
                    if c >= n { break }
                    if c + 1 < n && k[c + 1] < k[c] { c += 1 }
                    if k[c] >= lastKey { break }
                    k[i] = k[c]
                    val[i] = val[c]
                    i = c
                }
                k[i] = lastKey
                val[i] = lastValue
            }
        }
        return top
    }
}
