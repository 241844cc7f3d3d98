import Contracts
import Foundation
import HailKitTesting
import Testing

/// Analytics from outside: trips driven through the gateway, then its KPIs and path analysis read back
/// through the gateway as an operator would.
@Suite("analytics of trips driven through the gateway", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .serialized, .timeLimit(.minutes(5)))
struct AnalyticsFlowTests {
    static let from = (lat: 52.5200, lon: 13.4050)
    static let to = (lat: 52.5000, lon: 13.4450)

    /// Drives one trip: the driver goes online at the pickup, the rider orders, and after the start the
    /// driver's phone sends `route` one fix at a time; returns the order id.
    func trip(_ platform: Platform, route: [(Double, Double)]) async throws -> String {
        let rider = try await platform.account("rider")
        let driver = try await platform.account("driver")
        let online = try await platform.send(.POST, "/driver/online", token: driver.token, body: ["lat": Self.from.lat, "lon": Self.from.lon])
        try #require(online.status == 200, "\(online.text)")
        let body: [String: Any] = ["pickup": ["lat": Self.from.lat, "lon": Self.from.lon], "dropoff": ["lat": Self.to.lat, "lon": Self.to.lon]]
        #expect(try await platform.send(.POST, "/rides/quote", token: rider.token, body: body).status == 200)
        let created = try await platform.send(.POST, "/rides", token: rider.token, body: body, idempotencyKey: UUID().uuidString)
        try #require(created.status == 201, "\(created.text)")
        let id = try #require(created.json["id"] as? String)
        _ = try await platform.waitForOrder(id, token: rider.token) { $0["state"] as? String == "assigned" }
        for verb in ["arrive", "start"] {
            let moved = try await platform.send(.POST, "/driver/rides/\(id)/\(verb)", token: driver.token)
            try #require(moved.status == 200, "\(verb): \(moved.text)")
        }
        for (lat, lon) in route {
            let sent = try await platform.send(
                .POST, "/driver/locations", token: driver.token,
                body: ["points": [["lat": lat, "lon": lon, "at": Date().timeIntervalSince1970]]])
            try #require(sent.status == 200, "\(sent.text)")
            try await Task.sleep(for: .milliseconds(20))
        }
        let done = try await platform.send(.POST, "/driver/rides/\(id)/complete", token: driver.token)
        try #require(done.status == 200, "\(done.text)")
        // Off duty: the next trip gets the next driver.
        _ = try await platform.send(.POST, "/driver/offline", token: driver.token)
        return id
    }

    /// Points from `a` to `b`, both ends included.
    func line(_ a: (Double, Double), _ b: (Double, Double), _ steps: Int) -> [(Double, Double)] {
        (0...steps).map { i in
            let s = Double(i) / Double(steps)
            return (a.0 + (b.0 - a.0) * s, a.1 + (b.1 - a.1) * s)
        }
    }

    /// Metres from `p` to the segment `a`–`b` on a plane around `a`: the test's own arithmetic.
    func metres(_ p: [Double], _ a: [Double], _ b: [Double]) -> Double {
        let k = 111_195.0, c = cos(a[1] * .pi / 180)
        let px = (p[0] - a[0]) * k * c, py = (p[1] - a[1]) * k
        let bx = (b[0] - a[0]) * k * c, by = (b[1] - a[1]) * k
        let t = bx * bx + by * by > 0 ? max(0, min(1, (px * bx + py * by) / (bx * bx + by * by))) : 0
        return hypot(px - t * bx, py - t * by)
    }

    @Test("KPIs count the trips; a detour far off the direct line is flagged route-deviation, the straight trip is not; the path holds the fixes sent and a simplification within its tolerance")
    func detours() async throws {
        let platform = try Platform(analytics: ["analytics-path-delay-seconds": "1"])
        defer { platform.stopAll() }
        try await platform.start()
        let admin = try await platform.admin()
        let started = Date().timeIntervalSince1970 - 60

        let straightRoute = line((Self.from.lat, Self.from.lon), (Self.to.lat, Self.to.lon), 24)
        let straight = try await trip(platform, route: straightRoute)
        // A detour 5 km north of the direct line, and back.
        let north = (52.5600, 13.4250)
        let detourRoute = line((Self.from.lat, Self.from.lon), north, 12) + line(north, (Self.to.lat, Self.to.lon), 12).dropFirst()
        let detour = try await trip(platform, route: Array(detourRoute))

        let range = "from=\(Int(started))&to=\(Int(Date().timeIntervalSince1970) + 60)"
        var total: [String: Any] = [:]
        var anomalies: [[String: Any]] = []
        for _ in 0..<150 {
            let kpis = try await platform.send(.GET, "/admin/analytics/kpis?\(range)", token: admin.token)
            #expect(kpis.status == 200, "\(kpis.text)")
            total = kpis.json["total"] as? [String: Any] ?? [:]
            let flagged = try await platform.send(.GET, "/admin/analytics/anomalies?\(range)", token: admin.token)
            anomalies = flagged.json["trips"] as? [[String: Any]] ?? []
            if total["completed"] as? Int == 2, total["quotes"] as? Int == 2, !anomalies.isEmpty { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(total["orders"] as? Int == 2)
        #expect(total["assigned"] as? Int == 2)
        #expect(total["completed"] as? Int == 2)
        #expect(total["quotes"] as? Int == 2)
        #expect(total["activeDrivers"] as? Int == 2)
        #expect(anomalies.map { $0["orderID"] as? String } == [detour], "\(anomalies)")
        #expect(anomalies.first?["flags"] as? [String] == ["route-deviation"])

        for (id, route) in [(straight, straightRoute), (detour, Array(detourRoute))] {
            let answer = try await platform.send(.GET, "/admin/analytics/trips/\(id)/path?tolerance=25", token: admin.token)
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.json["type"] as? String == "FeatureCollection")
            let features = try #require(answer.json["features"] as? [[String: Any]])
            func coordinates(_ part: String) -> [[Double]] {
                let feature = features.first { ($0["properties"] as? [String: Any])?["part"] as? String == part }
                return (feature?["geometry"] as? [String: Any])?["coordinates"] as? [[Double]] ?? []
            }
            // The fixes from assignment to completion: the ride's, as sent (the one going online came before).
            let driven = coordinates("driven")
            // (Compared to a nanodegree: decimal text in JSON does not round-trip every last bit of a double.)
            let sent = route.map { [$0.1, $0.0] }
            #expect(driven.count == sent.count, "\(id): \(driven.count) points")
            #expect(zip(driven, sent).allSatisfy { abs($0[0] - $1[0]) < 1e-9 && abs($0[1] - $1[1]) < 1e-9 }, "\(id): \(driven)")
            let simplified = coordinates("simplified")
            #expect(simplified.count < driven.count && simplified.count >= 2)
            #expect(simplified.first == driven.first && simplified.last == driven.last)
            // Every driven point is within the tolerance of the simplified line.
            for point in driven {
                let nearest = zip(simplified, simplified.dropFirst()).map { metres(point, $0, $1) }.min() ?? .infinity
                #expect(nearest <= 25.5, "\(id): \(point) is \(nearest) m from the simplified line")
            }
            let trip = try #require(answer.json["trip"] as? [String: Any])
            let flags = trip["flags"] as? [String] ?? []
            #expect(flags.contains("route-deviation") == (id == detour), "\(id): \(flags)")
        }

        let heatmap = try await platform.send(.GET, "/admin/analytics/heatmap?kind=pickups&\(range)", token: admin.token)
        #expect(heatmap.status == 200, "\(heatmap.text)")
        let cells = heatmap.json["features"] as? [[String: Any]] ?? []
        #expect(cells.count == 1 && (cells.first?["properties"] as? [String: Any])?["value"] as? Double == 2, "\(heatmap.text)")
        let riderToken = try await platform.account("rider").token
        #expect(try await platform.send(.GET, "/admin/analytics/kpis", token: riderToken).status == 403)
    }
}
