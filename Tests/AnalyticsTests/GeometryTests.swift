@testable import Analytics
import Contracts
import Foundation
import HailKitTesting
import MatchingEngine
import Testing

/// The hexagonal grid and Douglas–Peucker, each against a computation of its own on thousands of random inputs.
@Suite("analytics geometry")
struct GeometryTests {
    /// The nearest centre found by looking at every cell in a generous block around the point: a point
    /// belongs to the hexagon whose centre is nearest.
    static func nearestCell(_ p: PlanePoint, grid: HexGrid) -> (cell: HexGrid.Cell, distance: Double) {
        let r0 = Int((p.y / (1.5 * grid.edgeKm)).rounded())
        let q0 = Int((p.x / (3.0.squareRoot() * grid.edgeKm) - Double(r0) / 2).rounded())
        var best = (cell: HexGrid.Cell(q: q0, r: r0), distance: Double.infinity)
        for q in (q0 - 4)...(q0 + 4) {
            for r in (r0 - 4)...(r0 + 4) {
                let cell = HexGrid.Cell(q: q, r: r)
                let d = p.distance(to: grid.centre(of: cell))
                if d < best.distance { best = (cell, d) }
            }
        }
        return best
    }

    /// Ray casting: whether `p` is inside the polygon.
    static func inside(_ p: PlanePoint, _ polygon: [PlanePoint]) -> Bool {
        var inside = false
        var j = polygon.count - 1
        for i in polygon.indices {
            let a = polygon[i], b = polygon[j]
            if (a.y > p.y) != (b.y > p.y), p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x { inside.toggle() }
            j = i
        }
        return inside
    }

    @Test("a point's cell has the nearest centre of all cells around it, and its hexagon contains the point (5,000 points, three edges)")
    func hexGrid() {
        var random = SeededGenerator(460)
        for edge in [0.46, 0.1, 2.5] {
            let grid = HexGrid(edgeKm: edge)
            for _ in 0..<5000 {
                let p = PlanePoint(x: Double.random(in: -40...40, using: &random), y: Double.random(in: -40...40, using: &random))
                let cell = grid.cell(at: p)
                let nearest = Self.nearestCell(p, grid: grid)
                // Ties (a point on an edge) may go either way, but only between equally near centres.
                #expect(abs(p.distance(to: grid.centre(of: cell)) - nearest.distance) < 1e-9, "\(p) edge \(edge): \(cell) vs \(nearest.cell)")
                #expect(p.distance(to: grid.centre(of: cell)) <= edge + 1e-9)
                #expect(Self.inside(p, grid.corners(of: cell)) || nearest.cell != cell, "\(p) not inside \(cell)")
                #expect(grid.cell(at: grid.centre(of: cell)) == cell)
            }
        }
        // Every corner is one edge from the centre, and neighbours' centres are √3 edges apart.
        let grid = HexGrid(edgeKm: 0.46)
        let cell = HexGrid.Cell(q: 3, r: -7)
        for corner in grid.corners(of: cell) { #expect(abs(corner.distance(to: grid.centre(of: cell)) - 0.46) < 1e-12) }
        #expect(abs(grid.centre(of: cell).distance(to: grid.centre(of: .init(q: 4, r: -7))) - 0.46 * 3.0.squareRoot()) < 1e-12)
    }

    @Test("a place's cell id round-trips: the cell's centre is placed in the same cell, its polygon is closed")
    func cityGrids() throws {
        let grids = try CityGrids(specification: "Berlin@52.52,13.405,40;Hamburg@53.55,10.0,30", edgeMeters: 460)
        var random = SeededGenerator(7)
        for _ in 0..<2000 {
            let point = GeoPoint(lat: Double.random(in: 52.35...52.69, using: &random), lon: Double.random(in: 13.15...13.65, using: &random))
            let place = grids.place(point)
            let id = try #require(place.cell)
            #expect(place.city == "Berlin")
            let centre = try #require(grids.centre(of: id))
            #expect(grids.place(centre).cell == id)
            #expect(centre.distanceKm(to: point) <= 0.47)
            let ring = try #require(grids.polygon(of: id))
            #expect(ring.count == 7 && ring.first == ring.last)
        }
        #expect(grids.place(GeoPoint(lat: 53.55, lon: 10.0)).city == "Hamburg")
        #expect(grids.place(GeoPoint(lat: 48.1, lon: 11.6)) == (CityGrids.elsewhere, nil))
        #expect(throws: (any Error).self) { try CityGrids(specification: "Berlin@52.52,13.405", edgeMeters: 460) }
        #expect(throws: (any Error).self) { try CityGrids(specification: "Ber lin@52.52,13.405,40", edgeMeters: 460) }
    }

    /// Douglas–Peucker as the textbook writes it: recursion on the farthest point.
    static func reference(_ points: [PlanePoint], _ first: Int, _ last: Int, _ tolerance: Double, _ kept: inout Set<Int>) {
        kept.insert(first)
        kept.insert(last)
        guard last > first + 1 else { return }
        var index = first, farthest = -1.0
        for i in (first + 1)..<last {
            let d = PathShape.distance(points[i], toSegment: points[first], points[last])
            if d > farthest { (index, farthest) = (i, d) }
        }
        if farthest > tolerance {
            reference(points, first, index, tolerance, &kept)
            reference(points, index, last, tolerance, &kept)
        }
    }

    /// The distance from a point to a segment by sampling the segment finely: independent of the projection formula.
    static func sampledDistance(_ p: PlanePoint, _ a: PlanePoint, _ b: PlanePoint) -> Double {
        (0...2000).map { i -> Double in
            let t = Double(i) / 2000
            return p.distance(to: PlanePoint(x: a.x + (b.x - a.x) * t, y: a.y + (b.y - a.y) * t))
        }.min()!
    }

    @Test("Douglas–Peucker keeps what the recursive textbook version keeps, and every dropped point is within the tolerance (2,000 random walks)")
    func douglasPeucker() {
        var random = SeededGenerator(25)
        for round in 0..<2000 {
            let count = Int.random(in: 0...120, using: &random)
            var points: [PlanePoint] = []
            var p = PlanePoint(x: 0, y: 0)
            for _ in 0..<count {
                p = PlanePoint(x: p.x + Double.random(in: -0.3...0.5, using: &random), y: p.y + Double.random(in: -0.4...0.4, using: &random))
                points.append(p)
            }
            let tolerance = [0.0, 0.01, 0.025, 0.1, 0.5][round % 5]
            let kept = PathShape.simplify(points, tolerance: tolerance)
            var expected = Set<Int>()
            if !points.isEmpty { Self.reference(points, 0, points.count - 1, tolerance, &expected) }
            #expect(kept == expected.sorted(), "round \(round)")
            #expect(kept.first == (points.isEmpty ? nil : 0) && kept.last == (points.isEmpty ? nil : points.count - 1))
            for (a, b) in zip(kept, kept.dropFirst()) {
                for i in a..<b where round % 10 == 0 {
                    #expect(Self.sampledDistance(points[i], points[a], points[b]) <= tolerance + 1e-3, "round \(round), point \(i)")
                }
            }
        }
    }

    @Test("a path's judgement: a detour is a route deviation, a straight ride is not, a long wait is a long stop, an early end is flagged")
    func pathRules() {
        let pickup = GeoPoint(lat: 52.52, lon: 13.405), dropoff = GeoPoint(lat: 52.52, lon: 13.465)  // about 4 km east
        let trip = TripFacts(orderID: "o", driverID: "d", state: "completed", pickup: pickup, dropoff: dropoff, assignedAt: 0, startedAt: 100, completedAt: 1000)
        let analysis = PathAnalysis(rules: PathRules())
        func line(_ from: GeoPoint, _ to: GeoPoint, _ n: Int, start: Double) -> [(GeoPoint, Double)] {
            (0...n).map { i in
                let s = Double(i) / Double(n)
                return (GeoPoint(lat: from.lat + (to.lat - from.lat) * s, lon: from.lon + (to.lon - from.lon) * s), start + Double(i) * 10)
            }
        }
        let straight = analysis.analyse(trip, fixes: line(pickup, dropoff, 40, start: 100), toleranceMeters: 25).analysis
        #expect(straight.flags == [])
        #expect(abs((straight.metrics.detourRatio ?? 0) - 1) < 0.01)
        let north = GeoPoint(lat: 52.56, lon: 13.435)  // 4.4 km off the line
        let detour = analysis.analyse(trip, fixes: line(pickup, north, 20, start: 100) + line(north, dropoff, 20, start: 310), toleranceMeters: 25).analysis
        #expect(detour.flags == ["route-deviation"])
        #expect(detour.metrics.maxOffCorridorKm > 4)
        let waited = line(pickup, pickup, 40, start: 100) + line(pickup, dropoff, 10, start: 510)
        let stop = analysis.analyse(trip, fixes: waited, toleranceMeters: 25).analysis
        #expect(stop.flags == ["long-stop"])
        #expect(stop.stays.count == 1 && stop.stays[0].seconds >= 400)
        let halfway = GeoPoint(lat: 52.52, lon: 13.420)
        let early = analysis.analyse(trip, fixes: line(pickup, halfway, 10, start: 100), toleranceMeters: 25).analysis
        #expect(early.flags == ["ended-away-from-dropoff", "ended-early"])
    }
}
