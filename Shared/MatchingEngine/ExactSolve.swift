/// Builds the solver's sparse graph from candidate lists.
enum CandidateGraph {
    /// - Parameters:
    ///   - lists: each row's k nearest columns.
    ///   - maxCost: edges longer than this are left out.
    ///   - extra: further edges per row, found by the optimality proof.
    static func build(
        lists: CandidateLists, columns: Int, maxCost: Double,
        extra: [Int: [(column: Int32, cost: Double)]]
    ) -> BipartiteGraph {
        let n = lists.rows, k = lists.width
        var rowStart = [Int32](repeating: 0, count: n + 1)
        var column: [Int32] = []
        var cost: [Double] = []
        column.reserveCapacity(n * k + extra.count)
        cost.reserveCapacity(n * k + extra.count)
        lists.columns.withUnsafeBufferPointer { cols in
            lists.distances.withUnsafeBufferPointer { dists in
                for i in 0..<n {
                    let base = i * k
                    for e in base..<(base + k) where dists[e] <= maxCost {
                        column.append(cols[e])
                        cost.append(dists[e])
                    }
                    if let more = extra[i] {
                        for edge in more {
                            column.append(edge.column)
                            cost.append(edge.cost)
                        }
                    }
                    rowStart[i + 1] = Int32(column.count)
                }
            }
        }
        return BipartiteGraph(rows: n, columns: columns, rowStart: rowStart, column: column, cost: cost)
    }
}

/// Exact mode with at least as many columns as rows: solve on each row's k nearest columns, then *prove*
/// the result optimal for the complete problem with the duals, adding edges only where the proof fails.
///
/// The proof: the solution is optimal over all n·m pairs when every left-out pair has a non-negative
/// reduced cost `d(i, j) − u(i) − v(j)`. Column duals never exceed `vMax` (zero while a column is
/// free), so a left-out pair can only violate when `d(i, j) < u(i) + vMax`. A row's left-out columns are
/// all at least as far as its k-th candidate, so a row whose `u(i) + vMax` does not exceed that distance
/// is proven at once; only the others ask the grid for the columns inside that radius. Violating pairs
/// become edges and the graph is solved again, warm: from the previous matching and duals, searching only
/// for the rows whose duals the new edges broke. The first graph also holds a complete assignment
/// (`completion`), so no search fails for want of columns in a hotspot with more orders than drivers. The loop ends when nothing is added, and then the assignment is the true
/// optimum, not an approximation of it.
///
/// Fast mode runs the same loop with a pickup radius (no edge longer than `maxCost`) and a cap on rounds:
/// what it returns is then the optimum of the edges it has, close to the true one but not proven.
struct ExactSolve {
    let rows: [PlanePoint]
    let columns: PackedGrid
    let k: Int
    var maxCost = Double.infinity
    var maxRounds = Int.max

    /// Reduced costs above −tolerance count as non-negative. Floating-point noise in the duals is far below
    /// it, and the most it can cost is n·tolerance km in total.
    static let tolerance = 1e-11

    /// At most this many violating pairs per row join the graph in one round (the most violated ones): a
    /// round's duals are still far from the final ones where the graph was poor, and taking every violation
    /// would swell the graph with edges the next round's duals no longer want.
    static let additionsPerRow = 8

    /// Edges to free columns given to a row for which a search found no augmenting path.
    static let escapesPerRow = 2

    /// Edges that make the first graph hold a complete assignment, so no search has to fail to find out
    /// it does not: rows take their nearest untaken candidate in turn, and a row whose candidates are all
    /// taken (a hotspot with more orders than drivers nearby) gets an edge to its nearest untaken column,
    /// wherever that is. Those long edges are what lets the surplus flow out of a hotspot; the solve then
    /// keeps only the ones the optimum needs.
    static func completion(
        _ lists: CandidateLists, rows: [PlanePoint], columns: PackedGrid
    ) -> [Int: [(column: Int32, cost: Double)]] {
        var taken = [Bool](repeating: false, count: columns.count)
        var left: [Int] = []
        for i in 0..<lists.rows {
            let base = i * lists.width
            if let e = (base..<(base + lists.width)).first(where: { !taken[Int(lists.columns[$0])] }) {
                taken[Int(lists.columns[e])] = true
            } else {
                left.append(i)
            }
        }
        var extra: [Int: [(column: Int32, cost: Double)]] = [:]
        for i in left {
            if let (j, d) = columns.nearest(to: rows[i], k: 1, where: { !taken[$0] }).first {
                taken[Int(j)] = true
                extra[i] = [(j, d)]
            }
        }
        return extra
    }

    func run() -> IndexAssignment {
        let n = rows.count, m = columns.count
        let lists = columns.nearest(to: rows, k: k)
        var extra = Self.completion(lists, rows: rows, columns: columns).filter { $0.value[0].cost <= maxCost }
        var added = extra.count
        var rounds = 0
        let solver = SparseAssignmentSolver()
        var previous: AssignmentSolution?
        var release: [Int] = []
        var violating: [(column: Int32, cost: Double, reduced: Double)] = []
        while true {
            rounds += 1
            let graph = CandidateGraph.build(lists: lists, columns: m, maxCost: maxCost, extra: extra)
            var solution = previous.map { solver.solve(graph, startingFrom: $0, release: release) } ?? solver.solve(graph)
            if m > n, !solution.isRectangularCertificateValid(tolerance: Self.tolerance) {
                // The warm start left a freed column priced below a matched one: solve this graph afresh.
                solution = solver.solve(graph)
            }
            previous = solution
            release = []
            if !solution.unmatchedRows.isEmpty, rounds < maxRounds {
                // No augmenting path (the completion makes this rare): give each such row edges to its
                // nearest free columns, which makes it matchable at once — within the radius, if any.
                let free = solution.rowOfColumn
                var escaped = 0
                for r in solution.unmatchedRows {
                    for (j, d) in columns.nearest(to: rows[r], k: Self.escapesPerRow, where: { free[$0] < 0 })
                    where d <= maxCost {
                        extra[r, default: []].append((j, d))
                        escaped += 1
                    }
                }
                added += escaped
                if escaped > 0 { continue }
            }

            if rounds >= maxRounds {
                return finish(solution, graph: graph, rounds: rounds, added: added)
            }
            let vMax = solution.v.max() ?? 0
            var violations = 0
            solution.v.withUnsafeBufferPointer { v in
                for i in 0..<n where solution.columnOfRow[i] >= 0 {
                    let width = lists.width
                    if width >= m { continue }
                    let kth = lists.distances[i * width + width - 1]
                    let u = solution.u(i)
                    let radius = u + vMax
                    if radius <= kth { continue }
                    // Keep the most violated few, sorted, as they come.
                    violating.removeAll(keepingCapacity: true)
                    columns.forEach(within: min(radius + 1e-9, maxCost), of: rows[i]) { j, d in
                        let reduced = d - u - v[j]
                        guard reduced < -Self.tolerance else { return }
                        if violating.count == Self.additionsPerRow {
                            if reduced >= violating[violating.count - 1].reduced { return }
                            violating.removeLast()
                        }
                        var at = violating.count
                        while at > 0 && violating[at - 1].reduced > reduced { at -= 1 }
                        violating.insert((Int32(j), d, reduced), at: at)
                    }
                    if violating.isEmpty { continue }
                    let edges = graph.rowStart[i]..<graph.rowStart[i + 1]
                    var took = false
                    for edge in violating where !edges.contains(where: { graph.column[Int($0)] == edge.column }) {
                        extra[i, default: []].append((edge.column, edge.cost))
                        violations += 1
                        took = true
                    }
                    if took { release.append(i) }
                }
            }
            if violations == 0 {
                return finish(solution, graph: graph, rounds: rounds, added: added)
            }
            added += violations
        }
    }

    private func finish(_ solution: AssignmentSolution, graph: BipartiteGraph, rounds: Int, added: Int) -> IndexAssignment {
        var result = IndexAssignment(driverOfOrder: solution.columnOfRow, pickupKm: solution.matchedCost)
        result.candidateEdges = graph.edgeCount
        result.solveRounds = rounds
        result.addedEdges = added
        return result
    }
}
