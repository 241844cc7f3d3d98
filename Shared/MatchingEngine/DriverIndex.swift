/// Whether a driver can be dispatched.
public enum DriverAvailability: UInt8, Sendable, Codable {
    /// Online and free: the only state queries return.
    case available
    /// Online, on a trip or holding a claim.
    case busy
    /// Signed off; the last position is kept so a driver coming back is placed at once.
    case offline
}

/// A driver found by a query, with its pickup distance.
public struct Neighbor: Hashable, Sendable {
    public var driver: DriverID
    public var distanceKm: Double
}

/// The live index of drivers: a uniform grid of cells holding the *available* drivers, plus a driver id →
/// slot table holding every known driver's position and state.
///
/// A location update is one table lookup and, when the driver stays in its cell, one store of the point;
/// crossing into another cell is a swap-remove from one cell and an append to the other. Nothing is ever
/// rebuilt. Busy and offline drivers keep their slot but leave the grid, so queries never filter.
///
/// It is a value type: copying it is O(1) and the copy is a consistent snapshot (the arrays are shared
/// until one side writes), which is how a dispatch window takes its view while updates keep flowing.
public struct DriverIndex: Sendable {
    public let geometry: GridGeometry
    var cells: [[GridEntry]]
    var ids: [DriverID] = []
    var points: [PlanePoint] = []
    var states: [DriverAvailability] = []
    /// The cell holding the slot, or -1 when the driver is not available.
    var cellOf: [Int32] = []
    /// Position of the slot inside its cell's array.
    var placeInCell: [Int32] = []
    var freeSlots: [Int32] = []
    var table: SlotTable

    /// Number of drivers known (any state).
    public var count: Int { table.count }
    /// Number of drivers that queries can return.
    public private(set) var availableCount = 0

    public init(geometry: GridGeometry, expectedDrivers: Int = 1024) {
        self.geometry = geometry
        self.cells = Array(repeating: [], count: geometry.cellCount)
        self.table = SlotTable(capacity: expectedDrivers)
        ids.reserveCapacity(expectedDrivers)
        points.reserveCapacity(expectedDrivers)
    }

    /// Adds a driver or replaces its position and state. A non-finite point changes nothing and answers
    /// false: a broken GPS fix must not poison the grid.
    @discardableResult
    public mutating func upsert(_ driver: DriverID, at point: PlanePoint, availability: DriverAvailability) -> Bool {
        guard point.x.isFinite, point.y.isFinite else { return false }
        if let slot = table.slot(of: driver.rawValue) {
            let s = Int(slot)
            move(slot: s, to: point)
            setState(slot: s, availability)
            return true
        }
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = Int(reused)
            ids[slot] = driver
            points[slot] = point
            states[slot] = .offline
            cellOf[slot] = -1
            placeInCell[slot] = -1
        } else {
            slot = ids.count
            ids.append(driver)
            points.append(point)
            states.append(.offline)
            cellOf.append(-1)
            placeInCell.append(-1)
        }
        table.set(driver.rawValue, Int32(slot))
        setState(slot: slot, availability)
        return true
    }

    /// Moves a known driver. Returns false, changing nothing, for a driver the index does not know or a
    /// point that is not finite.
    @discardableResult
    @inline(__always)
    public mutating func update(_ driver: DriverID, to point: PlanePoint) -> Bool {
        guard point.x.isFinite, point.y.isFinite, let slot = table.slot(of: driver.rawValue) else { return false }
        move(slot: Int(slot), to: point)
        return true
    }

    /// Changes a known driver's state. Returns false for a driver the index does not know.
    @discardableResult
    public mutating func setAvailability(_ driver: DriverID, _ availability: DriverAvailability) -> Bool {
        guard let slot = table.slot(of: driver.rawValue) else { return false }
        setState(slot: Int(slot), availability)
        return true
    }

    /// Forgets a driver entirely.
    public mutating func remove(_ driver: DriverID) {
        guard let slot = table.slot(of: driver.rawValue) else { return }
        setState(slot: Int(slot), .offline)
        table.remove(driver.rawValue)
        freeSlots.append(slot)
    }

    public func position(of driver: DriverID) -> PlanePoint? {
        table.slot(of: driver.rawValue).map { points[Int($0)] }
    }

    public func availability(of driver: DriverID) -> DriverAvailability? {
        table.slot(of: driver.rawValue).map { states[Int($0)] }
    }

    @inline(__always)
    private mutating func move(slot: Int, to point: PlanePoint) {
        points[slot] = point
        let old = Int(cellOf[slot])
        if old < 0 { return }
        let new = geometry.cell(of: point)
        let place = Int(placeInCell[slot])
        if new == old {
            cells[old][place].x = point.x
            cells[old][place].y = point.y
        } else {
            removeFromCell(slot: slot, cell: old, place: place)
            insertIntoCell(slot: slot, cell: new, point: point)
        }
    }

    private mutating func setState(slot: Int, _ state: DriverAvailability) {
        let was = states[slot]
        if was == state { return }
        states[slot] = state
        if was == .available {
            removeFromCell(slot: slot, cell: Int(cellOf[slot]), place: Int(placeInCell[slot]))
            availableCount -= 1
        } else if state == .available {
            insertIntoCell(slot: slot, cell: geometry.cell(of: points[slot]), point: points[slot])
            availableCount += 1
        }
    }

    @inline(__always)
    private mutating func removeFromCell(slot: Int, cell: Int, place: Int) {
        let last = cells[cell].count - 1
        if place != last {
            let moved = cells[cell][last]
            cells[cell][place] = moved
            placeInCell[Int(moved.slot)] = Int32(place)
        }
        cells[cell].removeLast()
        cellOf[slot] = -1
        placeInCell[slot] = -1
    }

    @inline(__always)
    private mutating func insertIntoCell(slot: Int, cell: Int, point: PlanePoint) {
        placeInCell[slot] = Int32(cells[cell].count)
        cellOf[slot] = Int32(cell)
        cells[cell].append(GridEntry(x: point.x, y: point.y, slot: Int32(slot)))
    }

    /// The `k` available drivers nearest to `point`, nearest first (ties by driver id). Exact.
    public func nearest(to point: PlanePoint, k: Int) -> [Neighbor] {
        guard k > 0, availableCount > 0 else { return [] }
        var best = NearestAccumulator(k: min(k, availableCount))
        geometry.searchRings(
            around: point,
            visit: { cell in
                for entry in cells[cell] {
                    let dx = entry.x - point.x, dy = entry.y - point.y
                    best.offer(dx * dx + dy * dy, key: ids[Int(entry.slot)].rawValue, slot: entry.slot)
                }
            },
            done: { bound in best.isFull && best.worst < bound * bound })
        return (0..<best.count).map {
            Neighbor(driver: ids[Int(best.slots[$0])], distanceKm: best.squared[$0].squareRoot())
        }
    }

    /// Every available driver within `radiusKm` of `point` (inclusive), nearest first (ties by id).
    public func within(radiusKm: Double, of point: PlanePoint) -> [Neighbor] {
        guard radiusKm >= 0, availableCount > 0 else { return [] }
        var found: [(Double, DriverID)] = []
        let r2 = radiusKm * radiusKm
        geometry.searchRings(
            around: point,
            visit: { cell in
                for entry in cells[cell] {
                    let dx = entry.x - point.x, dy = entry.y - point.y
                    let d2 = dx * dx + dy * dy
                    if d2 <= r2 { found.append((d2, ids[Int(entry.slot)])) }
                }
            },
            done: { bound in bound > radiusKm })
        found.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        return found.map { Neighbor(driver: $0.1, distanceKm: $0.0.squareRoot()) }
    }

    /// A packed, read-only copy of the available drivers for one dispatch window, on a grid sized to their
    /// density.
    public func snapshot() -> DriverSnapshot {
        var drivers: [DriverID] = []
        var positions: [PlanePoint] = []
        drivers.reserveCapacity(availableCount)
        positions.reserveCapacity(availableCount)
        for cell in cells {
            for entry in cell {
                drivers.append(ids[Int(entry.slot)])
                positions.append(PlanePoint(x: entry.x, y: entry.y))
            }
        }
        return DriverSnapshot(drivers: drivers, positions: positions)
    }
}
