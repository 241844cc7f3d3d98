/// A uniform grid of square cells over a rectangle of the plane.
///
/// Points outside the rectangle belong to the nearest border cell, so nothing is ever lost; the ring
/// search below knows that a border cell stands for everything beyond it and stays exact.
public struct GridGeometry: Sendable, Hashable {
    public let originX: Double
    public let originY: Double
    public let cellSize: Double
    public let columns: Int
    public let rows: Int

    /// - Parameters:
    ///   - minimum: south-west corner of the area the grid covers, km.
    ///   - maximum: north-east corner, km.
    ///   - cellSize: side of a cell in km (the design's 0.25–0.5 km for a live city).
    public init(minimum: PlanePoint, maximum: PlanePoint, cellSize: Double) {
        precondition(cellSize > 0 && cellSize.isFinite, "cell size must be positive")
        let width = max(maximum.x - minimum.x, cellSize)
        let height = max(maximum.y - minimum.y, cellSize)
        // Cap the cell count so an absurd extent cannot allocate the machine away: past 4M cells the
        // cells grow instead.
        var size = cellSize
        while (width / size + 1) * (height / size + 1) > 4_000_000 { size *= 2 }
        self.originX = minimum.x
        self.originY = minimum.y
        self.cellSize = size
        self.columns = Int(width / size) + 1
        self.rows = Int(height / size) + 1
    }

    public var cellCount: Int { columns * rows }

    @inline(__always)
    func column(_ x: Double) -> Int {
        let c = (x - originX) / cellSize
        // NaN never reaches here: the index refuses non-finite points.
        if c < 0 { return 0 }
        if c >= Double(columns - 1) { return columns - 1 }
        return Int(c)
    }

    @inline(__always)
    func row(_ y: Double) -> Int {
        let r = (y - originY) / cellSize
        if r < 0 { return 0 }
        if r >= Double(rows - 1) { return rows - 1 }
        return Int(r)
    }

    @inline(__always)
    func cell(of point: PlanePoint) -> Int { row(point.y) * columns + column(point.x) }

    /// Visits the cells around `point` ring by ring (Chebyshev distance 0, 1, 2, … from the point's cell),
    /// and after each ring asks `done(bound)`, where `bound` is a distance that no point in a cell not yet
    /// visited can be closer than. Stops when `done` says so or when every cell has been visited.
    @inline(__always)
    func searchRings(around point: PlanePoint, visit: (Int) -> Void, done: (Double) -> Bool) {
        let cx = column(point.x)
        let cy = row(point.y)
        visit(cy * columns + cx)
        var r = 0
        while true {
            // Distance from the point to the outside of the block of cells visited so far. A side of the
            // block that lies on the grid's border is no limit: everything beyond it lives in border cells
            // already visited.
            var bound = Double.infinity
            let left = cx - r, right = cx + r, bottom = cy - r, top = cy + r
            if left > 0 { bound = min(bound, point.x - (originX + Double(left) * cellSize)) }
            if right < columns - 1 { bound = min(bound, originX + Double(right + 1) * cellSize - point.x) }
            if bottom > 0 { bound = min(bound, point.y - (originY + Double(bottom) * cellSize)) }
            if top < rows - 1 { bound = min(bound, originY + Double(top + 1) * cellSize - point.y) }
            if bound == .infinity { return }
            // A micrometre of slack: a point lying exactly on a cell border may be filed on either side
            // by rounding, and must still be found.
            if done(max(bound - 1e-9, 0)) { return }
            r += 1
            let x0 = max(cx - r, 0), x1 = min(cx + r, columns - 1)
            if cy - r >= 0 {
                let base = (cy - r) * columns
                for x in x0...x1 { visit(base + x) }
            }
            if cy + r < rows {
                let base = (cy + r) * columns
                for x in x0...x1 { visit(base + x) }
            }
            let yi0 = max(cy - r + 1, 0), yi1 = min(cy + r - 1, rows - 1)
            if yi0 <= yi1 {
                if cx - r >= 0 { for y in yi0...yi1 { visit(y * columns + cx - r) } }
                if cx + r < columns { for y in yi0...yi1 { visit(y * columns + cx + r) } }
            }
        }
    }
}

/// One driver in a cell: its position inline, so a query reads one contiguous run of memory per cell.
@usableFromInline
struct GridEntry: Sendable {
    @usableFromInline var x: Double
    @usableFromInline var y: Double
    @usableFromInline var slot: Int32
}

/// The k best (distance², tie key, slot) seen so far, sorted ascending. Ties in distance are broken by the
/// tie key so results are deterministic and comparable with a linear scan. Its buffers are allocated once
/// and reused for every query of a batch.
struct NearestAccumulator: ~Copyable {
    let squared: UnsafeMutablePointer<Double>
    let keys: UnsafeMutablePointer<UInt64>
    let slots: UnsafeMutablePointer<Int32>
    private(set) var count = 0
    let k: Int

    init(k: Int) {
        self.k = k
        squared = .allocate(capacity: max(k, 1))
        keys = .allocate(capacity: max(k, 1))
        slots = .allocate(capacity: max(k, 1))
    }

    deinit {
        squared.deallocate()
        keys.deallocate()
        slots.deallocate()
    }

    @inline(__always) mutating func reset() { count = 0 }

    @inline(__always) var isFull: Bool { count == k }

    /// The k-th best squared distance, or infinity while fewer than k were seen.
    @inline(__always) var worst: Double { count == k ? squared[k - 1] : .infinity }

    @inline(__always)
    mutating func offer(_ d2: Double, key: UInt64, slot: Int32) {
        if count == k {
            let w = squared[k - 1]
            if d2 > w || (d2 == w && key >= keys[k - 1]) { return }
        } else {
            count += 1
        }
        var i = count - 1
        while i > 0 {
            let p = squared[i - 1]
            if p < d2 || (p == d2 && keys[i - 1] < key) { break }
            squared[i] = p
            keys[i] = keys[i - 1]
            slots[i] = slots[i - 1]
            i -= 1
        }
        squared[i] = d2
        keys[i] = key
        slots[i] = slot
    }
}
