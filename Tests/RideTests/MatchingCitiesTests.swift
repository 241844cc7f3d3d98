import Contracts
import Foundation
import HailKitTesting
import Testing

@Suite("matching split by city", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(3)))
struct MatchingCitiesTests {
    @Test("matching in two cities, an instance each: each city's ride goes to that city's driver; fixes, going online and a driver's status reach the driver's city through the gateway; the operators' views add both cities up; a place in the other city is refused by an instance with 421")
    func twoCities() async throws {
        let platform = try Platform(matchingCities: "Berlin@52.52,13.405,30000,Europe/Berlin;Hamburg@53.55,9.99,30000,Europe/Berlin")
        defer { platform.stopAll() }
        try await platform.start()
        let berlin: [String: Any] = ["lat": 52.5205, "lon": 13.4055]
        let hamburg: [String: Any] = ["lat": 53.5505, "lon": 9.9905]
        let bea = try await platform.account("driver", name: "Bea")
        let hinnerk = try await platform.account("driver", name: "Hinnerk")
        for (driver, place) in [(bea, berlin), (hinnerk, hamburg)] {
            let online = try await platform.send(.POST, "/driver/online", token: driver.token, body: place)
            #expect(online.status == 200 && online.json["state"] as? String == "available", "\(online.text)")
        }
        // A fix through the gateway (gathered with its city's), and the status from the city that has it.
        let fix = try await platform.send(.POST, "/driver/locations", token: hinnerk.token, body: ["points": [["lat": 53.551, "lon": 9.991]]])
        #expect(fix.status == 200 && fix.json["accepted"] as? Int == 1, "\(fix.text)")
        let status = try await platform.send(.GET, "/driver/status", token: hinnerk.token)
        #expect(status.json["state"] as? String == "available" && status.json["lat"] as? Double == 53.551, "\(status.text)")
        // Online again without a place: the city that has Bea's last fix takes it (the other has none).
        let again = try await platform.send(.POST, "/driver/online", token: bea.token, body: [:])
        #expect(again.status == 200 && again.json["state"] as? String == "available" && again.json["lat"] as? Double == 52.5205, "\(again.text)")

        let hanna = try await platform.account("rider", name: "Hanna")
        let bruno = try await platform.account("rider", name: "Bruno")
        var orders: [(id: String, token: String, driver: String)] = []
        for (rider, from, to, driver) in [
            (hanna, hamburg, ["lat": 53.56, "lon": 10.0] as [String: Any], hinnerk), (bruno, berlin, ["lat": 52.50, "lon": 13.45], bea),
        ] {
            let created = try await platform.send(
                .POST, "/rides", token: rider.token, body: ["pickup": from, "dropoff": to], idempotencyKey: UUID().uuidString)
            try #require(created.status == 201, "\(created.text)")
            orders.append((try #require(created.json["id"] as? String), rider.token, driver.id))
        }
        for order in orders {
            let assigned = try await platform.waitForOrder(order.id, token: order.token) { $0["driverID"] as? String != nil }
            #expect(assigned["driverID"] as? String == order.driver, "a city's ride goes to that city's driver: \(assigned)")
        }

        let admin = try await platform.admin()
        let stats = try await platform.send(.GET, "/admin/dispatch/stats", token: admin.token)
        #expect(stats.json["assigned"] as? Int == 2, "both cities' assignments added up: \(stats.text)")
        let drivers = try await platform.send(.GET, "/admin/dispatch/drivers", token: admin.token)
        let listed = Set(((drivers.json["drivers"] as? [[String: Any]]) ?? []).compactMap { $0["driverID"] as? String })
        #expect(listed.isSuperset(of: [bea.id, hinnerk.id]), "\(drivers.text)")
        let seen = try await platform.send(.GET, "/admin/dispatch/drivers/\(hinnerk.id)", token: admin.token)
        #expect(seen.json["state"] as? String == "busy", "\(seen.text)")

        // Berlin's instance asked, directly, to take a fix in Hamburg: refused, the driver left where he is.
        let misdirected = try await testRequest(
            .POST, platform.matchings[0].baseURL + "/v1/drivers/\(hinnerk.id)/locations", json: ["points": [["lat": 53.552, "lon": 9.992]]],
            headers: ["Authorization": "Bearer \(hinnerk.token)"])
        #expect(misdirected.status == 421 && misdirected.json["type"] as? String == "urn:hailstorm:problem:misdirected", "\(misdirected.text)")
        let still = try await platform.send(.GET, "/driver/status", token: hinnerk.token)
        #expect(still.json["lat"] as? Double == 53.551, "\(still.text)")
    }
}
