/// The available drivers of one dispatch window, packed for queries: one array of entries ordered by cell,
/// on a grid whose cell size follows the drivers' density (about two drivers per cell), so a k-nearest
/// query reads a handful of contiguous cells.
///
/// Drivers are addressed by their position in `drivers` (the solver's column number). Ties in distance
/// are broken by that position.
public struct DriverSnapshot: Sendable {
    public let drivers: [DriverID]
    public let grid: PackedGrid

    public var count: Int { drivers.count }
    public var positions: [PlanePoint] { grid.positions }

    public init(drivers: [DriverID], positions: [PlanePoint], driversPerCell: Double = 2) {
        precondition(drivers.count == positions.count, "one position per driver")
        self.drivers = drivers
        self.grid = PackedGrid(positions: positions, pointsPerCell: driversPerCell)
    }
}

/// Points packed by cell on a grid sized to their density, answering exact k-nearest and radius queries.
/// A point is addressed by its position in `positions`; ties in distance are broken by that position.
public struct PackedGrid: Sendable {
    public let positions: [PlanePoint]
    public let geometry: GridGeometry
    let cellStart: [Int32]
    let entries: [GridEntry]

    public var count: Int { positions.count }

    /// - Parameter pointsPerCell: the density the grid is sized for.
    public init(positions: [PlanePoint], pointsPerCell: Double = 2) {
        self.positions = positions
        let driversPerCell = pointsPerCell
        var minX = Double.infinity, minY = Double.infinity, maxX = -Double.infinity, maxY = -Double.infinity
        for p in positions {
            precondition(p.x.isFinite && p.y.isFinite, "driver positions must be finite")
            minX = min(minX, p.x); maxX = max(maxX, p.x)
            minY = min(minY, p.y); maxY = max(maxY, p.y)
        }
        if positions.isEmpty { minX = 0; minY = 0; maxX = 1; maxY = 1 }
        let area = max((maxX - minX) * (maxY - minY), 1e-6)
        let cellSize = max((area * driversPerCell / Double(max(positions.count, 1))).squareRoot(), 1e-3)
        let geometry = GridGeometry(
            minimum: PlanePoint(x: minX, y: minY), maximum: PlanePoint(x: maxX, y: maxY), cellSize: cellSize)
        self.geometry = geometry

        // Counting sort of the drivers by cell.
        var cellOfDriver = [Int32](repeating: 0, count: positions.count)
        var start = [Int32](repeating: 0, count: geometry.cellCount + 1)
        for (i, p) in positions.enumerated() {
            let c = geometry.cell(of: p)
            cellOfDriver[i] = Int32(c)
            start[c + 1] += 1
        }
        for c in 0..<geometry.cellCount { start[c + 1] += start[c] }
        var fill = start
        var entries = [GridEntry](repeating: GridEntry(x: 0, y: 0, slot: 0), count: positions.count)
        for (i, p) in positions.enumerated() {
            let c = Int(cellOfDriver[i])
            entries[Int(fill[c])] = GridEntry(x: p.x, y: p.y, slot: Int32(i))
            fill[c] += 1
        }
        self.cellStart = start
        self.entries = entries
    }

    /// For every query point, its `k` nearest points (fewer when the grid has fewer), nearest first.
    public func nearest(to points: [PlanePoint], k: Int) -> CandidateLists {
        let k = min(max(k, 0), count)
        var lists = CandidateLists(rows: points.count, width: k)
        guard k > 0 else { return lists }
        var best = NearestAccumulator(k: k)
        let geometry = self.geometry
        entries.withUnsafeBufferPointer { entries in
            cellStart.withUnsafeBufferPointer { start in
                lists.columns.withUnsafeMutableBufferPointer { columns in
                    lists.distances.withUnsafeMutableBufferPointer { distances in
                        for (row, q) in points.enumerated() {
                            best.reset()
                            geometry.searchRings(
                                around: q,
                                visit: { cell in
                                    var e = Int(start[cell])
                                    let end = Int(start[cell + 1])
                                    while e < end {
                                        let entry = entries[e]
                                        let dx = entry.x - q.x, dy = entry.y - q.y
                                        let d2 = dx * dx + dy * dy
                                        if d2 <= best.worst {
                                            best.offer(d2, key: UInt64(entry.slot), slot: entry.slot)
                                        }
                                        e += 1
                                    }
                                },
                                done: { bound in best.isFull && best.worst < bound * bound })
                            let base = row * k
                            for i in 0..<k {
                                columns[base + i] = best.slots[i]
                                distances[base + i] = best.squared[i].squareRoot()
                            }
                        }
                    }
                }
            }
        }
        return lists
    }

    /// The `k` nearest points to `point` among those `included`, nearest first: (point index, km).
    public func nearest(to point: PlanePoint, k: Int, where included: (Int) -> Bool) -> [(Int32, Double)] {
        guard k > 0, count > 0 else { return [] }
        var best = NearestAccumulator(k: k)
        entries.withUnsafeBufferPointer { entries in
            cellStart.withUnsafeBufferPointer { start in
                geometry.searchRings(
                    around: point,
                    visit: { cell in
                        for e in Int(start[cell])..<Int(start[cell + 1]) {
                            let entry = entries[e]
                            let dx = entry.x - point.x, dy = entry.y - point.y
                            let d2 = dx * dx + dy * dy
                            if d2 <= best.worst, included(Int(entry.slot)) {
                                best.offer(d2, key: UInt64(entry.slot), slot: entry.slot)
                            }
                        }
                    },
                    done: { bound in best.isFull && best.worst < bound * bound })
            }
        }
        return (0..<best.count).map { (best.slots[$0], best.squared[$0].squareRoot()) }
    }

    /// Calls `body(pointIndex, distanceKm)` for every point strictly closer than `radiusKm` to `point`,
    /// in no particular order.
    public func forEach(within radiusKm: Double, of point: PlanePoint, _ body: (Int, Double) -> Void) {
        guard radiusKm > 0, count > 0 else { return }
        let r2 = radiusKm * radiusKm
        entries.withUnsafeBufferPointer { entries in
            cellStart.withUnsafeBufferPointer { start in
                geometry.searchRings(
                    around: point,
                    visit: { cell in
                        for e in Int(start[cell])..<Int(start[cell + 1]) {
                            let entry = entries[e]
                            let dx = entry.x - point.x, dy = entry.y - point.y
                            let d2 = dx * dx + dy * dy
                            if d2 < r2 { body(Int(entry.slot), d2.squareRoot()) }
                        }
                    },
                    done: { bound in bound >= radiusKm })
            }
        }
    }
}

/// Each order's candidate drivers: row `i` holds `width` driver positions (in the snapshot) and their
/// distances, nearest first. Every row has `width` entries because a snapshot query never returns fewer
/// than `min(k, drivers)`.
public struct CandidateLists: Sendable {
    public let rows: Int
    public let width: Int
    public var columns: [Int32]
    public var distances: [Double]

    init(rows: Int, width: Int) {
        self.rows = rows
        self.width = width
        columns = [Int32](repeating: -1, count: rows * width)
        distances = [Double](repeating: .infinity, count: rows * width)
    }
}
