@testable import Analytics
import Contracts
import EventBus
import Foundation
import HailKit
import HailKitTesting
import RedisKit
import SQLiteKit
import Testing

/// A hand-written day of events, replayed into the streams analytics reads: the figures it answers are
/// the ones counted by hand below, and a rebuild from the streams answers the same.
@Suite("analytics from a replayed event sequence", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .serialized, .timeLimit(.minutes(3)))
struct ReplayTests {
    /// Pickups in Berlin's centre cell and drop-offs 3 km south-east.
    static let pickup = GeoPoint(lat: 52.5200, lon: 13.4050)
    static let dropoff = GeoPoint(lat: 52.5000, lon: 13.4450)

    @Test("KPIs and funnel equal the hand count; a redelivered event changes nothing; rebuild gives the same numbers")
    func handCounted() async throws {
        let streams = (0..<6).map { _ in TestEnvironment.unique("an") }
        let app = try await Analytics.buildApplication(reader: try .testing([
            "discovery.prefix": "/" + TestEnvironment.unique("analytics") + "/",
            "analytics.order.stream": streams[0], "analytics.payment.stream": streams[1], "analytics.coupon.stream": streams[2],
            "analytics.ad.stream": streams[3], "analytics.location.stream": streams[4], "analytics.quotes.stream": streams[5],
            "analytics.path.delay.seconds": "0",
        ], service: "analytics"))
        let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort, poolSize: 1))
        defer { Task { await redis.shutdown() } }
        let admin = try await TestKeys.userToken("admin-\(UUID().uuidString.prefix(8))", role: .admin)

        // A whole minute ten minutes ago, so every event falls in minutes 0–4 of the range.
        let t = (Date().timeIntervalSince1970 / 60).rounded(.down) * 60 - 600
        @Sendable func publish<E: DomainEvent>(_ stream: Int, _ event: E, type: String? = nil, id: String = RandomID.uuid()) async throws {
            let envelope = try EventEnvelope(event, source: "test", type: type, id: id)
            try await redis.xadd(EventEnvelope.streamKey(streams[stream]), fields: envelope.fields)
        }
        @Sendable func move(_ order: String, rider: String, driver: String? = nil, _ from: OrderState, _ to: OrderState, at: Double, actor: String) -> OrderEvents.Moved {
            OrderEvents.Moved(orderID: order, riderID: rider, driverID: driver, from: from, to: to, at: at, fareCents: 1000, actor: actor)
        }
        // The payment first: its order has not been read yet when it arrives.
        try await publish(1, PaymentEvents.Succeeded(
            paymentID: "p1", orderID: "o1", riderID: "r1", driverID: "d1", fareCents: 1000, discountCents: 200, amountCents: 800,
            commissionCents: 150, couponID: "c1", entries: [], at: t + 205))
        // Three quotes in one batch, three orders: o1 rides to the end, o2 is cancelled by its rider while offered,
        // o3 expires without an offer.
        try await publish(5, QuoteEvents.Given(quotes: (1...3).map {
            QuoteEvents.Quote(riderID: "r\($0)", lat: Self.pickup.lat, lon: Self.pickup.lon, at: t + 4 + Double($0), surge: 1)
        }))
        try await publish(0, OrderEvents.Created(
            orderID: "o1", riderID: "r1", pickup: Self.pickup, dropoff: Self.dropoff, fareCents: 1000, createdAt: t + 10, surge: 1.5))
        try await publish(0, OrderEvents.Created(
            orderID: "o2", riderID: "r2", pickup: Self.pickup, dropoff: Self.dropoff, fareCents: 1000, createdAt: t + 20, surge: 1))
        try await publish(0, OrderEvents.Created(
            orderID: "o3", riderID: "r3", pickup: Self.pickup, dropoff: Self.dropoff, fareCents: 1000, createdAt: t + 25))
        try await publish(0, move("o1", rider: "r1", .created, .offered, at: t + 11, actor: "matching"), type: "order.offered")
        try await publish(0, move("o1", rider: "r1", driver: "d1", .offered, .assigned, at: t + 12, actor: "matching"), type: "order.assigned")
        try await publish(0, move("o2", rider: "r2", .created, .offered, at: t + 21, actor: "matching"), type: "order.offered")
        // Offered again to more drivers: no second offer in the figures.
        try await publish(0, move("o2", rider: "r2", .offered, .offered, at: t + 26, actor: "matching"), type: "order.offered")
        try await publish(0, move("o2", rider: "r2", .offered, .cancelled, at: t + 30, actor: "r2"), type: "order.cancelled")
        try await publish(0, move("o1", rider: "r1", driver: "d1", .assigned, .arriving, at: t + 72, actor: "d1"), type: "order.arriving")
        try await publish(0, move("o1", rider: "r1", driver: "d1", .arriving, .inTrip, at: t + 80, actor: "d1"), type: "order.in_trip")
        try await publish(0, move("o3", rider: "r3", .created, .expired, at: t + 145, actor: "order"), type: "order.expired")
        try await publish(0, move("o1", rider: "r1", driver: "d1", .inTrip, .completed, at: t + 200, actor: "d1"), type: "order.completed")
        let paidID = RandomID.uuid()
        try await publish(0, move("o1", rider: "r1", driver: "d1", .completed, .paid, at: t + 210, actor: "payment"), type: "order.paid", id: paidID)
        try await publish(2, CouponEvents.Claimed(claimID: "k1", campaignID: "c", userID: "r1", claimedAt: t + 40))
        try await publish(3, AdEvents.Counted(tokenID: "i1", campaignID: "a", userID: "r1", placement: "rider.waiting", chargedMillicents: 1000, at: t + 50))
        try await publish(3, AdEvents.Counted(tokenID: "k1", campaignID: "a", userID: "r1", placement: "rider.waiting", chargedMillicents: 50_000, at: t + 55), type: AdEvents.Counted.clickType)
        // d1 available in minutes 0 and 1 (twice in minute 1: one driver-minute), then on the trip: the straight line.
        var fixes = [t + 1, t + 61, t + 65].map { LocationEvents.Fix(driverID: "d1", lat: Self.pickup.lat, lon: Self.pickup.lon, at: $0, state: "available") }
        for i in 0...12 {
            let share = Double(i) / 12
            fixes.append(LocationEvents.Fix(
                driverID: "d1", lat: Self.pickup.lat + (Self.dropoff.lat - Self.pickup.lat) * share,
                lon: Self.pickup.lon + (Self.dropoff.lon - Self.pickup.lon) * share, at: t + 80 + 10 * Double(i), state: "busy"))
        }
        try await publish(4, LocationEvents.Fixes(fixes: fixes))

        try await withRunningService(app) { base in
            let range = "from=\(Int(t))&to=\(Int(t) + 300)"
            func get(_ path: String) async throws -> TestResponse {
                try await testRequest(.GET, base + path, headers: ["Authorization": "Bearer \(admin)"])
            }
            func kpis(_ query: String = "") async throws -> AnalyticsAPI.KPIs {
                let answer = try await get("/v1/kpis?\(range)\(query)")
                try #require(answer.status == 200, "\(answer.text)")
                return try JSONDecoder().decode(AnalyticsAPI.KPIs.self, from: Data(answer.text.utf8))
            }
            var figures = try await kpis().total
            // Each stream's consumer goes at its own pace: wait until every stream's last event is counted.
            for _ in 0..<100
            where figures.paid < 1 || figures.adClicks < 1 || figures.adImpressions < 1 || figures.couponClaims < 1 || figures.gmvCents < 1000
                || figures.supply == 0 || figures.quotes < 3
            {
                try await Task.sleep(for: .milliseconds(100))
                figures = try await kpis().total
            }
            #expect(figures.quotes == 3)
            #expect(figures.orders == 3)
            #expect(figures.quoteConversion == 1)
            #expect(figures.offered == 2)
            #expect(figures.assigned == 1)
            #expect(figures.matchRate == 1.0 / 3)
            #expect(figures.timeToAssign.map { abs($0.p50 - 2) / 2 } ?? 1 < 0.02, "\(String(describing: figures.timeToAssign))")
            #expect(figures.pickupTime.map { abs($0.p99 - 60) / 60 } ?? 1 < 0.02)
            #expect(figures.tripTime.map { abs($0.p90 - 120) / 120 } ?? 1 < 0.02)
            #expect(figures.cancellations.total == 1 && figures.cancellations.byRider == 1 && figures.cancellations.byDriver == 0)
            #expect(figures.cancellations.inState == ["offered": 1])
            #expect(figures.expired == 1)
            #expect(figures.completed == 1)
            #expect(figures.paid == 1)
            #expect(figures.gmvCents == 1000 && figures.couponSubsidyCents == 200 && figures.commissionCents == 150)
            #expect(figures.activeRiders == 3)
            #expect(figures.activeDrivers == 1)
            #expect(figures.supply == 0.4, "two driver-minutes available over five minutes")
            #expect(figures.demand == 3)
            #expect(figures.ordersUnderSurge == 1)
            #expect(figures.couponClaims == 1 && figures.adImpressions == 1 && figures.adClicks == 1)
            #expect(figures.adSpendMillicents == 51_000)

            // Per minute: the orders in minute 0, the arrival in minute 1, the expiry in minute 2, completion and payment in minute 3.
            let steps = try await kpis("&step=minute").steps
            #expect(steps.map(\.start) == (0..<5).map { t + 60 * Double($0) })
            #expect(steps.map(\.figures.orders) == [3, 0, 0, 0, 0])
            #expect(steps.map(\.figures.expired) == [0, 0, 1, 0, 0])
            #expect(steps.map(\.figures.completed) == [0, 0, 0, 1, 0])
            #expect(steps.map(\.figures.gmvCents) == [0, 0, 0, 1000, 0])
            // One city, one cell: the platform-wide claims and ads are not in the city's figures.
            let cell = try #require(CityGrids(specification: CityGrids.defaultSpecification, edgeMeters: 460).place(Self.pickup).cell)
            let inCell = try await kpis("&cell=\(cell)").total
            #expect(inCell.orders == 3 && inCell.couponClaims == 0 && inCell.gmvCents == 1000 && inCell.supply == 0.4)

            let funnelAnswer = try await get("/v1/funnel?\(range)")
            let funnel = try JSONDecoder().decode(AnalyticsAPI.Funnel.self, from: Data(funnelAnswer.text.utf8))
            #expect(funnel.steps.map(\.step) == ["quote", "order", "offered", "assigned", "arriving", "in_trip", "completed", "paid"])
            #expect(funnel.steps.map(\.count) == [3, 3, 2, 1, 1, 1, 1, 1])
            #expect(funnel.steps.map(\.dropOff) == [nil, 0, 1.0 / 3, 0.5, 0, 0, 0, 0])

            // The same event delivered again changes nothing.
            try await publish(0, move("o1", rider: "r1", driver: "d1", .completed, .paid, at: t + 210, actor: "payment"), type: "order.paid", id: paidID)
            try await publish(3, AdEvents.Counted(tokenID: "i2", campaignID: "a", userID: "r1", placement: "rider.waiting", chargedMillicents: 1, at: t + 299))
            for _ in 0..<100 where try await kpis().total.adImpressions < 2 { try await Task.sleep(for: .milliseconds(100)) }
            let before = try await kpis("&step=minute")
            #expect(before.total.paid == 1)
            #expect(before.total.adImpressions == 2 && before.total.adSpendMillicents == 51_001)

            // The straight trip's path: no flags; the fixes from assignment to completion (two at the pickup, then the 13 of the ride).
            let path = try await get("/v1/trips/o1/path")
            #expect(path.status == 200, "\(path.text)")
            let trip = try JSONDecoder().decode(AnalyticsAPI.TripPath.self, from: Data(path.text.utf8))
            #expect(trip.trip.flags == [])
            #expect(trip.trip.metrics.fixes == 15)
            #expect(trip.trip.metrics.simplifiedPoints == 2)

            let rebuilt = try await testRequest(.POST, base + "/v1/rebuild", headers: ["Authorization": "Bearer \(admin)"])
            #expect(rebuilt.status == 200, "\(rebuilt.text)")
            #expect(rebuilt.json["events"] as? Int == 21)
            let after = try await kpis("&step=minute")
            #expect(after == before)
            let funnelAfter = try JSONDecoder().decode(AnalyticsAPI.Funnel.self, from: Data(try await get("/v1/funnel?\(range)").text.utf8))
            #expect(funnelAfter == funnel)

            // Bad questions are told why.
            for (query, field) in [("from=10&to=5", "from"), ("step=week", "step"), ("cell=nowhere", "cell"), ("from=abc", "from"), ("city=Atlantis", "city")] {
                let bad = try await get("/v1/kpis?\(query)")
                #expect(bad.status == 400, "\(query): \(bad.text)")
                #expect(bad.text.contains("\"\(field)\""), "\(query): \(bad.text)")
            }
            #expect(try await get("/v1/heatmap?kind=rain").status == 400)
            #expect(try await get("/v1/trips/nope/path").status == 404)
            let rider = try await TestKeys.userToken("rider-1", role: .rider)
            #expect(try await testRequest(.GET, base + "/v1/kpis", headers: ["Authorization": "Bearer \(rider)"]).status == 403)
        }
    }
}

@Suite("an interrupted rebuild", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(2)))
struct InterruptedRebuildTests {
    @Test("a rebuild that stopped after emptying the tables is run again at the next start: the figures come back from the streams")
    func resumed() async throws {
        let folder = try TestEnvironment.temporaryDirectory("analytics-data")
        let stream = TestEnvironment.unique("an-orders")
        let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort, poolSize: 1))
        defer { Task { await redis.shutdown() } }
        let t = (Date().timeIntervalSince1970 / 60).rounded(.down) * 60 - 300
        for i in 0..<3 {
            let created = OrderEvents.Created(
                orderID: "o\(i)", riderID: "r\(i)", pickup: ReplayTests.pickup, dropoff: ReplayTests.dropoff, fareCents: 900, createdAt: t + Double(i))
            try await redis.xadd(EventEnvelope.streamKey(stream), fields: try EventEnvelope(created, source: "test").fields)
        }
        // Analytics had read them all before (its group is past them), then a rebuild began and the
        // process stopped right after emptying the tables: only a rebuild can bring them back.
        try await redis.xgroupCreate(EventEnvelope.streamKey(stream), group: AnalyticsIngest.group, startAt: "$")
        let db = try await SQLiteStore.open(
            configuration: SQLiteConfiguration(path: folder + "/analytics.sqlite"), migrations: AnalyticsStore.migrations)
        let store = AnalyticsStore(db: db, grids: try CityGrids(specification: CityGrids.defaultSpecification, edgeMeters: 460))
        try await store.wipe()
        #expect(try await store.isRebuilding())
        try await db.close()

        let app = try await Analytics.buildApplication(reader: try .testing([
            "discovery.prefix": "/" + TestEnvironment.unique("analytics") + "/", "data.dir": folder, "analytics.order.stream": stream,
        ], service: "analytics"))
        let admin = try await TestKeys.userToken("admin-\(UUID().uuidString.prefix(8))", role: .admin)
        try await withRunningService(app) { base in
            let answer = try await testRequest(
                .GET, base + "/v1/kpis?from=\(Int(t) - 60)&to=\(Int(t) + 120)", headers: ["Authorization": "Bearer \(admin)"])
            let kpis = try JSONDecoder().decode(AnalyticsAPI.KPIs.self, from: Data(answer.text.utf8))
            // Counted by the rebuild at start: the consumers have nothing left to read.
            #expect(kpis.total.orders == 3, "\(answer.text)")
        }
        let reopened = try await SQLiteStore.open(
            configuration: SQLiteConfiguration(path: folder + "/analytics.sqlite"), migrations: AnalyticsStore.migrations)
        #expect(try await AnalyticsStore(db: reopened, grids: store.grids).isRebuilding() == false)
        try await reopened.close()
    }
}
