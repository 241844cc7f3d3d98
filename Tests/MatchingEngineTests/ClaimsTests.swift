import HailKitTesting
import Testing
@testable import MatchingEngine

@Suite("Claims")
struct ClaimsTests {
    @Test("concurrent claims never give a driver two orders or an order two drivers")
    func concurrentClaims() async {
        let claims = DispatchClaims()
        let drivers = 50, orders = 80
        // 8 tasks race over every (order, driver) pair in different orders.
        let wins = await withTaskGroup(of: [(OrderID, DriverID)].self) { group in
            for t in 0..<8 {
                group.addTask {
                    var rng = SeededGenerator(UInt64(100 + t))
                    var won: [(OrderID, DriverID)] = []
                    for _ in 0..<4000 {
                        let o = OrderID(UInt64.random(in: 0..<UInt64(orders), using: &rng))
                        let d = DriverID(UInt64.random(in: 0..<UInt64(drivers), using: &rng))
                        if claims.claim(order: o, driver: d) == .claimed { won.append((o, d)) }
                    }
                    return won
                }
            }
            var all: [(OrderID, DriverID)] = []
            for await won in group { all += won }
            return all
        }
        var driverOf: [OrderID: DriverID] = [:]
        var orderOf: [DriverID: OrderID] = [:]
        for (o, d) in wins {
            // A repeat of the same pair is the same claim; anything else would be a double assignment.
            #expect(driverOf[o] == nil || driverOf[o] == d)
            #expect(orderOf[d] == nil || orderOf[d] == o)
            driverOf[o] = d
            orderOf[d] = o
        }
        #expect(claims.count == driverOf.count)
        #expect(driverOf.count == drivers, "with more orders than drivers every driver ends up holding one")
    }

    @Test("a window's commit fails cleanly for a driver taken or gone since the snapshot")
    func commitAfterSnapshot() {
        let geometry = GridGeometry(minimum: PlanePoint(x: 0, y: 0), maximum: PlanePoint(x: 5, y: 5), cellSize: 0.5)
        var index = DriverIndex(geometry: geometry)
        for d in 0..<3 { index.upsert(DriverID(UInt64(d)), at: PlanePoint(x: Double(d), y: 0), availability: .available) }
        let live = LiveDriverIndex(index)
        let claims = DispatchClaims()
        let snapshot = live.snapshot()
        #expect(snapshot.count == 3)
        live.setAvailability(DriverID(2), .offline)  // signs off mid-window
        #expect(claims.claim(order: OrderID(99), driver: DriverID(1)) == .claimed)  // grabbed an offer
        let outcomes = live.commit([
            Assignment(order: OrderID(1), driver: DriverID(0), pickupKm: 0),
            Assignment(order: OrderID(2), driver: DriverID(1), pickupKm: 0),
            Assignment(order: OrderID(3), driver: DriverID(2), pickupKm: 0),
            Assignment(order: OrderID(1), driver: DriverID(1), pickupKm: 0),
        ], claims: claims)
        #expect(outcomes == [.claimed, .driverTaken(by: OrderID(99)), .driverUnavailable, .orderTaken(by: DriverID(0))])
        #expect(live.copy().availability(of: DriverID(0)) == .busy)
        #expect(claims.release(order: OrderID(1)) == DriverID(0))
        #expect(claims.driver(of: OrderID(1)) == nil)
    }

    @Test("concurrent windows committing over the same drivers never double-assign")
    func concurrentCommits() async {
        let geometry = GridGeometry(minimum: PlanePoint(x: 0, y: 0), maximum: PlanePoint(x: 5, y: 5), cellSize: 0.5)
        var index = DriverIndex(geometry: geometry)
        var rng = SeededGenerator(5)
        for d in 0..<200 {
            index.upsert(DriverID(UInt64(d)), at: randomPoints(1, side: 5, &rng)[0], availability: .available)
        }
        let live = LiveDriverIndex(index)
        let claims = DispatchClaims()
        let committed = await withTaskGroup(of: [Assignment].self) { group in
            for w in 0..<4 {
                group.addTask {
                    var rng = SeededGenerator(UInt64(w))
                    let orders = randomPoints(120, side: 5, &rng).enumerated().map {
                        DispatchOrder(id: OrderID(UInt64(w * 1000 + $0.offset)), pickup: $0.element)
                    }
                    let result = Dispatcher().dispatch(orders, drivers: live.snapshot())
                    let outcomes = live.commit(result.assignments, claims: claims)
                    return zip(result.assignments, outcomes).filter { $0.1 == .claimed }.map(\.0)
                }
            }
            var all: [Assignment] = []
            for await a in group { all += a }
            return all
        }
        #expect(Set(committed.map(\.driver)).count == committed.count)
        #expect(committed.count == claims.count)
        #expect(live.copy().availableCount == 200 - committed.count)
    }
}
