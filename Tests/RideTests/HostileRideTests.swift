import Contracts
import Foundation
import HailKitTesting
import Testing

/// The requests that once stopped a process, sent through the gateway and to each service directly:
/// every one is a 4xx at once, and every process keeps its pid.
@Suite("hostile requests against the whole platform", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .serialized, .timeLimit(.minutes(4)))
struct HostileRideTests {
    @Test("points off the earth, overflowing deadlines and a reused Idempotency-Key: 4xx answers, no process restarts")
    func everyProcessStaysUp() async throws {
        let platform = try Platform(money: true)
        defer { platform.stopAll() }
        try await platform.start()
        let processes = [platform.login, platform.order, platform.matching, platform.grab, platform.gateway]
            + [platform.coupon, platform.payment, platform.settlement].compactMap { $0 }
        let pids = processes.map { $0.process?.pid }
        let rider = try await platform.account("rider")
        let admin = try await platform.admin()

        for _ in 0..<3 {
            let quote = try await platform.send(
                .POST, "/rides/quote", token: rider.token, body: ["pickup": ["lat": 1e308, "lon": 0], "dropoff": ["lat": 0, "lon": 0]])
            #expect(quote.status == 400)
            #expect(quote.json["field"] as? String == "pickup.lat")
        }
        let surge = try await platform.send(
            .PUT, "/admin/surge", token: admin.token, body: ["at": ["lat": 52.5, "lon": 1e300], "factor": 2])
        #expect((400..<500).contains(surge.status))
        for process in processes {
            let health = try await testRequest(.GET, process.baseURL + "/healthz", headers: ["X-Hailstorm-Deadline-Ms": "99999999999999"])
            #expect(health.status == 200, "\(process.name)")
            let overflow = try await testRequest(
                .GET, process.baseURL + "/healthz", headers: ["X-Hailstorm-Deadline-Ms": "999999999999999999999"])
            #expect(overflow.status == 400, "\(process.name)")
        }
        for (path, token) in [
            ("/rides?limit=99999999999999999999", rider.token), ("/rides?limit=-1", rider.token),
            ("/admin/settlements?limit=1e400", admin.token), ("/rides?cursor=18446744073709551616_x", rider.token),
        ] {
            let answer = try await platform.send(.GET, path, token: token)
            #expect(answer.status == 400, "\(path): \(answer.status)")
        }
        let fix = try await platform.send(
            .POST, "/driver/locations", token: try await platform.account("driver").token,
            body: ["points": [["lat": 52.5, "lon": 13.4, "at": 1e300]]])
        #expect(fix.status == 400)

        // One key, two different rides: the second is refused, not answered with the first.
        let key = UUID().uuidString
        let ride: [String: Any] = ["pickup": ["lat": 52.52, "lon": 13.40], "dropoff": ["lat": 52.50, "lon": 13.42]]
        let first = try await platform.send(.POST, "/rides", token: rider.token, body: ride, idempotencyKey: key)
        #expect(first.status == 201)
        let same = try await platform.send(.POST, "/rides", token: rider.token, body: ride, idempotencyKey: key)
        #expect(same.status == 201 && same.json["id"] as? String == first.json["id"] as? String)
        let other = try await platform.send(
            .POST, "/rides", token: rider.token,
            body: ["pickup": ["lat": 52.52, "lon": 13.40], "dropoff": ["lat": 52.40, "lon": 13.10]], idempotencyKey: key)
        #expect(other.status == 422)
        #expect(other.json["type"] as? String == "urn:hailstorm:problem:idempotency-key-reused")

        #expect(processes.map { $0.process?.pid } == pids, "a process was restarted")
        #expect(processes.allSatisfy { $0.process?.isRunning == true })
    }
}
