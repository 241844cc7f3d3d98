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
/// for the rows whose duals the new edges broke. When a search finds no augmenting path (a hotspot with
/// more orders than drivers nearby), each row it reached gets its nearest columns outside the crowded set. The loop ends when nothing is added, and then the assignment is the true
/// optimum, not an approximation of it.
struct ExactSolve {
    let rows: [PlanePoint]
    let columns: PackedGrid
    let k: Int

    /// Reduced costs above −tolerance count as non-negative. Floating-point noise in the duals is far below
    /// it, and the most it can cost is n·tolerance km in total.
    static let tolerance = 1e-11

    /// At most this many violating pairs per row join the graph in one round (the most violated ones): a
    /// round's duals are still far from the final ones where the graph was poor, and taking every violation
    /// would swell the graph with edges the next round's duals no longer want.
    static let additionsPerRow = 8

    /// Edges out of a crowded set given to each of its rows when a search finds no augmenting path.
    static let escapesPerRow = 2

    func run() -> IndexAssignment {
        let n = rows.count, m = columns.count
        let lists = columns.nearest(to: rows, k: k)
        var extra: [Int: [(column: Int32, cost: Double)]] = [:]
        var rounds = 0
        var added = 0
        let solver = SparseAssignmentSolver()
        var previous: AssignmentSolution?
        var release: [Int] = []
        var violating: [(column: Int32, cost: Double, reduced: Double)] = []
        while true {
            rounds += 1
            let graph = CandidateGraph.build(lists: lists, columns: m, maxCost: .infinity, extra: extra)
            var solution = previous.map { solver.solve(graph, startingFrom: $0, release: release) } ?? solver.solve(graph)
            if m > n, !solution.isRectangularCertificateValid(tolerance: Self.tolerance) {
                // The warm start left a freed column priced below a matched one: solve this graph afresh.
                solution = solver.solve(graph)
            }
            previous = solution
            release = []
            if !solution.unmatchedRows.isEmpty {
                // No augmenting path: a set of rows shares too few columns (a hotspot with more orders than
                // drivers). Give each of those rows its nearest columns outside that crowded set, the edges
                // through which the surplus can flow out.
                var crowded = [Bool](repeating: false, count: m)
                for j in solution.crowdedColumns { crowded[j] = true }
                for r in Set(solution.starvedRows) {
                    let outside = columns.nearest(to: rows[r], k: Self.escapesPerRow) { !crowded[$0] }
                    var own = extra[r] ?? []
                    let edges = graph.rowStart[r]..<graph.rowStart[r + 1]
                    for (j, d) in outside where !edges.contains(where: { graph.column[Int($0)] == j }) {
                        own.append((j, d))
                        added += 1
                        // A matched row whose new edge undercuts its dual must be searched for again.
                        if solution.columnOfRow[r] >= 0, d - solution.u(r) - solution.v[Int(j)] < -Self.tolerance {
                            release.append(r)
                        }
                    }
                    extra[r] = own
                }
                continue
            }

            let vMax = solution.v.max() ?? 0
            var violations = 0
            solution.v.withUnsafeBufferPointer { v in
                for i in 0..<n {
                    let width = lists.width
                    if width >= m { continue }
                    let kth = lists.distances[i * width + width - 1]
                    let u = solution.u(i)
                    let radius = u + vMax
                    if radius <= kth { continue }
                    violating.removeAll(keepingCapacity: true)
                    columns.forEach(within: radius + 1e-9, of: rows[i]) { j, d in
                        let reduced = d - u - v[j]
                        if reduced < -Self.tolerance { violating.append((Int32(j), d, reduced)) }
                    }
                    if violating.isEmpty { continue }
                    if violating.count > Self.additionsPerRow {
                        violating.sort { $0.reduced < $1.reduced }
                        violating.removeLast(violating.count - Self.additionsPerRow)
                    }
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
                var result = IndexAssignment(driverOfOrder: solution.columnOfRow, pickupKm: solution.matchedCost)
                result.candidateEdges = graph.edgeCount
                result.solveRounds = rounds
                result.addedEdges = added
                return result
            }
            added += violations
        }
    }
}
