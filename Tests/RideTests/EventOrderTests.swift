import Contracts
import EventBus
import Foundation
import HailKit
import HailKitTesting
import NIOHTTP1
import RedisKit
import Testing

/// Streams deliver at least once, and a reclaimed or retried event can arrive after a later one. What a
/// rider or driver would notice if matching applied them blindly: an order dispatched again after it was
/// assigned, a driver stuck "busy" after the trip ended, or freed in the middle of the next trip.
/// Matching runs here on a Redis of its own, and the test writes the order stream as the order service
/// would, out of order.
@Suite("Order events redelivered out of order", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"))
struct EventOrderTests {
    let redis: RedisServerProcess
    let client: RedisClient
    let matching: ServiceProcess

    init() throws {
        redis = try RedisServerProcess()
        client = RedisClient(configuration: .init(port: redis.port, poolSize: 1))
        matching = try ServiceProcess(
            "matching", redisPort: redis.port, discoveryPrefix: "/\(TestEnvironment.unique("event-order"))",
            options: ["matching-window-ms": "200", "log-level": "warning"])
    }

    func publish(_ event: some DomainEvent) async throws {
        let envelope = try EventEnvelope(event, source: "order")
        try await client.send(RedisClient.xaddCommand(EventEnvelope.streamKey(envelope.stream), fields: envelope.fields))
    }

    func moved(_ order: String, driver: String?, _ from: OrderState, _ to: OrderState) -> OrderEvents.Moved {
        OrderEvents.Moved(
            orderID: order, riderID: "rider-1", driverID: driver, from: from, to: to, at: Date().timeIntervalSince1970,
            fareCents: 1200)
    }

    func created(_ order: String) -> OrderEvents.Created {
        OrderEvents.Created(
            orderID: order, riderID: "rider-1", pickup: GeoPoint(lat: 52.52, lon: 13.40), dropoff: GeoPoint(lat: 52.50, lon: 13.42),
            fareCents: 1200, createdAt: Date().timeIntervalSince1970)
    }

    func waitingOrders(_ admin: String) async throws -> Int {
        let stats = try await testRequest(.GET, matching.baseURL + "/v1/stats", headers: ["Authorization": "Bearer \(admin)"])
        return stats.json["ordersWaiting"] as? Int ?? -1
    }

    func state(of driver: String, token: String) async throws -> String {
        let answer = try await testRequest(.GET, matching.baseURL + "/v1/drivers/\(driver)", headers: ["Authorization": "Bearer \(token)"])
        return answer.json["state"] as? String ?? "status \(answer.status)"
    }

    /// Waits until `condition` holds: the events before it have been applied (one consumer, stream order).
    func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("\(what) did not happen within 20 s\n\(matching.output().suffix(3000))")
        throw TestProcessError("timed out: \(what)")
    }

    @Test("a late order.created does not dispatch an assigned order; a late assigned or completed does not flip a driver")
    func outOfOrder() async throws {
        defer {
            matching.kill()
            redis.kill()
        }
        try await matching.start()
        let admin = try await TestKeys.userToken("admin-1", role: .admin)

        // An order assigned (by a grab) before its `order.created` reached matching: it is never dispatched.
        try await publish(moved("order-late", driver: "driver-x", .offered, .assigned))
        try await publish(created("order-late"))
        try await publish(created("order-marker"))
        try await eventually("the marker order waits") { try await waitingOrders(admin) >= 1 }
        #expect(try await waitingOrders(admin) == 1, "only the marker waits; the assigned order came back")
        try await publish(moved("order-marker", driver: nil, .created, .expired))
        try await eventually("the marker order expires") { try await waitingOrders(admin) == 0 }

        // Two drivers online; the second one's events serve as markers.
        let one = "driver-one-\(UUID().uuidString.prefix(6))"
        let two = "driver-two-\(UUID().uuidString.prefix(6))"
        let oneToken = try await TestKeys.userToken(one, role: .driver)
        let twoToken = try await TestKeys.userToken(two, role: .driver)
        for (driver, token) in [(one, oneToken), (two, twoToken)] {
            let online = try await testRequest(
                .POST, matching.baseURL + "/v1/drivers/\(driver)/online", json: ["lat": 52.52, "lon": 13.40],
                headers: ["Authorization": "Bearer \(token)"])
            try #require(online.status == 200, "\(online.text)")
        }

        try await publish(moved("trip-a", driver: one, .created, .assigned))
        try await eventually("driver one is busy on trip A") { try await state(of: one, token: oneToken) == "busy" }
        try await publish(moved("trip-a", driver: one, .inTrip, .completed))
        try await eventually("driver one is free after trip A") { try await state(of: one, token: oneToken) == "available" }

        // Trip A's assignment delivered again after it ended.
        try await publish(moved("trip-a", driver: one, .created, .assigned))
        try await publish(moved("trip-z", driver: two, .created, .assigned))
        try await eventually("marker: driver two busy") { try await state(of: two, token: twoToken) == "busy" }
        #expect(try await state(of: one, token: oneToken) == "available", "a late assignment of an ended trip made the driver busy")

        // Driver one on trip B; trip A's end delivered again in the middle of it.
        try await publish(moved("trip-b", driver: one, .created, .assigned))
        try await eventually("driver one is busy on trip B") { try await state(of: one, token: oneToken) == "busy" }
        try await publish(moved("trip-a", driver: one, .inTrip, .completed))
        try await publish(moved("trip-z", driver: two, .inTrip, .completed))
        try await eventually("marker: driver two free") { try await state(of: two, token: twoToken) == "available" }
        #expect(try await state(of: one, token: oneToken) == "busy", "the end of an earlier trip freed a driver in the middle of the next")
        await client.shutdown()
    }
}
