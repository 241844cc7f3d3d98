/// The dense baseline: shortest augmenting paths over a full cost matrix (the Jonker–Volgenant family, as
/// SciPy's `linear_sum_assignment` implements it), O(n²·m) in the worst case. Exact mode does not use it;
/// it is what the sparse solver with its optimality proof is measured against, and the tests' second
/// opinion.
public struct DenseAssignmentSolver {
    public init() {}

    /// Assigns every row of the `rows × columns` matrix (row-major, `rows ≤ columns`) to a distinct column
    /// at minimum total cost. Returns the column of each row.
    public func solve(cost: [Double], rows n: Int, columns m: Int) -> [Int] {
        precondition(n <= m, "the dense solver needs at least as many columns as rows")
        precondition(cost.count == n * m)
        if n == 0 { return [] }
        var u = [Double](repeating: 0, count: n)
        var v = [Double](repeating: 0, count: m)
        var shortest = [Double](repeating: .infinity, count: m)
        var path = [Int](repeating: -1, count: m)
        var colOfRow = [Int](repeating: -1, count: n)
        var rowOfCol = [Int](repeating: -1, count: m)
        var rowSeen = [Bool](repeating: false, count: n)
        var colSeen = [Bool](repeating: false, count: m)
        var remaining = [Int](repeating: 0, count: m)

        for current in 0..<n {
            var minValue = 0.0
            var i = current
            for j in 0..<m { remaining[j] = m - 1 - j }
            var left = m
            for r in 0..<n { rowSeen[r] = false }
            for j in 0..<m { colSeen[j] = false; shortest[j] = .infinity }
            var sink = -1
            while sink < 0 {
                rowSeen[i] = true
                var best = -1
                var lowest = Double.infinity
                let base = i * m
                for it in 0..<left {
                    let j = remaining[it]
                    let r = minValue + cost[base + j] - u[i] - v[j]
                    if r < shortest[j] {
                        path[j] = i
                        shortest[j] = r
                    }
                    if shortest[j] < lowest || (shortest[j] == lowest && rowOfCol[j] < 0) {
                        lowest = shortest[j]
                        best = it
                    }
                }
                minValue = lowest
                precondition(best >= 0 && minValue.isFinite, "cost matrix has no feasible assignment")
                let j = remaining[best]
                if rowOfCol[j] < 0 { sink = j } else { i = rowOfCol[j] }
                colSeen[j] = true
                left -= 1
                remaining[best] = remaining[left]
            }
            u[current] += minValue
            for r in 0..<n where rowSeen[r] && r != current {
                u[r] += minValue - shortest[colOfRow[r]]
            }
            for j in 0..<m where colSeen[j] {
                v[j] -= minValue - shortest[j]
            }
            var j = sink
            while true {
                let r = path[j]
                rowOfCol[j] = r
                let previous = colOfRow[r]
                colOfRow[r] = j
                if r == current { break }
                j = previous
            }
        }
        return colOfRow
    }
}
