import Foundation
import HailKitTesting
import Testing
@testable import MatchingEngine

@Suite("Driver index")
struct DriverIndexTests {
    /// The reference answer: every available driver, sorted by (distance, id).
    func linearScan(_ truth: [DriverID: (PlanePoint, DriverAvailability)], from q: PlanePoint, k: Int) -> [Neighbor] {
        var candidates: [(d2: Double, id: DriverID)] = []
        for (id, (point, state)) in truth where state == .available {
            candidates.append((point.squaredDistance(to: q), id))
        }
        candidates.sort { (a: (d2: Double, id: DriverID), b: (d2: Double, id: DriverID)) -> Bool in
            a.d2 < b.d2 || (a.d2 == b.d2 && a.id < b.id)
        }
        return candidates.prefix(k).map { Neighbor(driver: $0.id, distanceKm: $0.d2.squareRoot()) }
    }

    @Test("k-nearest and radius queries equal a linear scan as drivers move, go busy, go offline and leave")
    func queriesEqualLinearScan() {
        var rng = SeededGenerator(11)
        // 0.5 km cells over a 6 km city; drivers on a 0.25 km lattice sit on cell borders and tie constantly.
        let geometry = GridGeometry(minimum: PlanePoint(x: 0, y: 0), maximum: PlanePoint(x: 6, y: 6), cellSize: 0.5)
        var index = DriverIndex(geometry: geometry, expectedDrivers: 4)
        var truth: [DriverID: (PlanePoint, DriverAvailability)] = [:]
        func randomPoint() -> PlanePoint {
            // Some points fall outside the grid's rectangle, which border cells must still hold.
            let x = (Double.random(in: -1...7, using: &rng) / 0.25).rounded() * 0.25
            let y = (Double.random(in: -1...7, using: &rng) / 0.25).rounded() * 0.25
            return PlanePoint(x: x, y: y)
        }
        for step in 0..<3000 {
            let id = DriverID(UInt64.random(in: 0..<150, using: &rng))
            switch Int.random(in: 0..<10, using: &rng) {
            case 0...4:
                let p = randomPoint()
                if truth[id] == nil {
                    index.upsert(id, at: p, availability: .available)
                    truth[id] = (p, .available)
                } else {
                    let known = index.update(id, to: p)
                    #expect(known)
                    truth[id]!.0 = p
                }
            case 5, 6:
                let state: DriverAvailability = [.available, .busy, .offline].randomElement(using: &rng)!
                let known = index.setAvailability(id, state)
                #expect(known == (truth[id] != nil))
                if truth[id] != nil { truth[id]!.1 = state }
            case 7:
                index.remove(id)
                truth[id] = nil
                #expect(index.position(of: id) == nil)
            default:
                // A small move, mostly within the same cell.
                if let (p, _) = truth[id] {
                    let q = PlanePoint(x: p.x + 0.01, y: p.y - 0.01)
                    index.update(id, to: q)
                    truth[id]!.0 = q
                }
            }
            #expect(index.count == truth.count)
            #expect(index.availableCount == truth.values.count { $0.1 == .available })
            if step % 10 == 0 {
                let q = randomPoint()
                let k = Int.random(in: 1...12, using: &rng)
                #expect(index.nearest(to: q, k: k) == linearScan(truth, from: q, k: k), "step \(step)")
                let radius = Double.random(in: 0...2, using: &rng)
                let within = linearScan(truth, from: q, k: .max).filter { $0.distanceKm <= radius }
                #expect(index.within(radiusKm: radius, of: q) == within, "step \(step)")
            }
        }
        // Busy and offline drivers never come back from a query.
        let busy = truth.filter { $0.value.1 != .available }.map(\.key)
        let everyone = index.nearest(to: PlanePoint(x: 3, y: 3), k: 1000).map(\.driver)
        #expect(Set(everyone).isDisjoint(with: busy))
        #expect(everyone.count == index.availableCount)
    }

    @Test("an empty index and empty cells answer nothing, not garbage")
    func emptyIndex() {
        let geometry = GridGeometry(minimum: PlanePoint(x: 0, y: 0), maximum: PlanePoint(x: 10, y: 10), cellSize: 0.3)
        var index = DriverIndex(geometry: geometry)
        #expect(index.nearest(to: PlanePoint(x: 5, y: 5), k: 3).isEmpty)
        index.upsert(DriverID(1), at: PlanePoint(x: 9.9, y: 9.9), availability: .available)
        // One driver in a far corner, every other cell empty: the search must still reach it.
        #expect(index.nearest(to: PlanePoint(x: 0, y: 0), k: 3).map(\.driver) == [DriverID(1)])
        #expect(index.within(radiusKm: 1, of: PlanePoint(x: 0, y: 0)).isEmpty)
        index.setAvailability(DriverID(1), .offline)
        #expect(index.nearest(to: PlanePoint(x: 0, y: 0), k: 3).isEmpty)
        let moved = index.update(DriverID(2), to: PlanePoint(x: 1, y: 1))
        #expect(!moved)
        // A broken fix is refused, and the driver stays where it was.
        index.setAvailability(DriverID(1), .available)
        let poisoned = index.update(DriverID(1), to: PlanePoint(x: .nan, y: 1))
        let added = index.upsert(DriverID(3), at: PlanePoint(x: .infinity, y: 0), availability: .available)
        #expect(!poisoned && !added)
        #expect(index.position(of: DriverID(1)) == PlanePoint(x: 9.9, y: 9.9))
        #expect(index.count == 1)
        #expect(index.nearest(to: PlanePoint(x: 0, y: 0), k: 3).map(\.driver) == [DriverID(1)])
    }

    @Test("the packed snapshot's batched k-nearest equals a linear scan, ties broken by position")
    func snapshotEqualsLinearScan() {
        var rng = SeededGenerator(12)
        for trial in 0..<20 {
            let m = Int.random(in: 1...400, using: &rng)
            let lattice: Double? = trial % 2 == 0 ? 0.5 : nil
            let drivers = randomPoints(m, side: 8, &rng, grid: lattice)
            let queries = randomPoints(50, side: 10, &rng, grid: lattice)  // some outside the drivers' box
            let snapshot = DriverSnapshot(drivers: (0..<m).map { DriverID(UInt64($0)) }, positions: drivers)
            let k = Int.random(in: 1...15, using: &rng)
            let lists = snapshot.grid.nearest(to: queries, k: k)
            for (row, q) in queries.enumerated() {
                var scan: [(d2: Double, j: Int)] = []
                for j in drivers.indices { scan.append((drivers[j].squaredDistance(to: q), j)) }
                scan.sort { (a: (d2: Double, j: Int), b: (d2: Double, j: Int)) -> Bool in
                    a.d2 < b.d2 || (a.d2 == b.d2 && a.j < b.j)
                }
                let expected = scan.prefix(k).map { $0.j }
                let width = lists.width
                #expect(width == min(k, m))
                let got = (0..<width).map { Int(lists.columns[row * width + $0]) }
                #expect(got == expected, "trial \(trial) row \(row)")
            }
        }
    }

    @Test("the slot table survives heavy insert and delete churn")
    func slotTableChurn() {
        var rng = SeededGenerator(13)
        var table = SlotTable(capacity: 4)
        var truth: [UInt64: Int32] = [:]
        for _ in 0..<50_000 {
            let key = UInt64.random(in: 0..<2000, using: &rng)
            if Bool.random(using: &rng) {
                let value = Int32.random(in: 0..<1000, using: &rng)
                table.set(key, value)
                truth[key] = value
            } else {
                table.remove(key)
                truth[key] = nil
            }
        }
        #expect(table.count == truth.count)
        for key in 0..<UInt64(2000) { #expect(table.slot(of: key) == truth[key]) }
    }

    @Test("the projection keeps distances within its stated error over a 50 km city")
    func projectionError() {
        let centre = GeoCoordinate(latitude: 45, longitude: 7)
        let projection = LocalProjection(origin: centre)
        // 25 km north of the centre, 10 km apart east-west, by the haversine formula.
        func haversine(_ a: GeoCoordinate, _ b: GeoCoordinate) -> Double {
            let p1 = a.latitude * .pi / 180, p2 = b.latitude * .pi / 180
            let dp = p2 - p1, dl = (b.longitude - a.longitude) * .pi / 180
            let h = sin(dp / 2) * sin(dp / 2) + cos(p1) * cos(p2) * sin(dl / 2) * sin(dl / 2)
            return 2 * LocalProjection.earthRadiusKm * asin(h.squareRoot())
        }
        let a = GeoCoordinate(latitude: 45.2248, longitude: 7.0)
        let b = GeoCoordinate(latitude: 45.2248, longitude: 7.1272)
        let planar = projection.project(a).distance(to: projection.project(b))
        let truth = haversine(a, b)
        #expect(abs(planar - truth) / truth < 0.0045)
        let back = projection.unproject(projection.project(a))
        #expect(abs(back.latitude - a.latitude) < 1e-12 && abs(back.longitude - a.longitude) < 1e-12)
    }
}
