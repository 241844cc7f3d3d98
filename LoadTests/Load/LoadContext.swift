import AsyncHTTPClient
import Contracts
import Foundation
import HailKit
import NIOCore
import NIOHTTP1
import NIOPosix
import RedisKit

/// What every scenario works with: the gateway, the run's signing key (for synthetic riders and drivers),
/// an admin's token, and Redis to watch the order stream.
struct LoadContext: Sendable {
    let gateway: String
    /// For a gateway served over https only: plain-http gateways (every local, compose and port-forwarded
    /// run) are called over `lane`.
    let client: HTTPClient
    /// Keep-alive HTTP/1.1 connections to the gateway on HailKit's lean client (the one the services call
    /// each other with): AsyncHTTPClient's machinery per request cost the generator about 15 times what
    /// wrk spends per request, CPU taken from the two cores the measured system runs on.
    let lane: GatewayLane?
    let tokens: AccessTokens
    let admin: String
    /// The run's Redis (nil against the bare reference endpoint).
    let redis: RedisClient?
    /// A label unique to this run: synthetic account ids carry it.
    let runLabel: String
    let recorder: LatencyRecorder
    /// Requests this process has open; beyond `maxInFlight` a request is not sent but counted as
    /// "client saturated". Queueing more in the HTTP client's pool than it can carry measures nothing but
    /// the pool (and removing timed-out waiters from a long queue eats the load generator's own CPU).
    let inFlight = SharedCount()
    let maxInFlight: Int

    /// Tokens for `count` synthetic accounts of `role`, signed with the run's key like login's. They are
    /// not in login's table: the load reaches the services it measures without a bcrypt sign-in each.
    func accounts(_ count: Int, role: Role, prefix: String) async throws -> [(id: String, token: String)] {
        let now = Date()
        var accounts: [(String, String)] = []
        accounts.reserveCapacity(count)
        for index in 0..<count {
            let id = "\(prefix)-\(runLabel)-\(index)"
            accounts.append((id, try await tokens.sign(AccessTokenClaims(
                userID: id, role: role, tokenID: UUID().uuidString, issuedAt: now, expiresAt: now + 6 * 3600))))
        }
        return accounts
    }

    struct Reply: Sendable {
        var status: Int
        /// The body as read from the connection.
        var bytes: ByteBuffer

        init(status: Int, bytes: ByteBuffer) {
            self.status = status
            self.bytes = bytes
        }

        init(status: Int, body: Data) {
            self.init(status: status, bytes: ByteBuffer(data: body))
        }

        var body: Data { Data(buffer: bytes) }
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        /// The problem's slug (`sold-out` of `"type":"urn:hailstorm:problem:sold-out"`). Read straight from
        /// the bytes: most answers of a flash sale are refusals, and parsing each whole document cost the
        /// generator a twentieth of its time — time taken from the services it measures.
        var problem: String? {
            if let range = valueRange(after: #""type":"urn:hailstorm:problem:"#) {
                let slug = bytes.readableBytesView[range].prefix { $0 != UInt8(ascii: "\"") }
                return String(decoding: slug, as: UTF8.self)
            }
            // Written some other way (spaces, escapes): parse it.
            return (json["type"] as? String).map { $0.replacingOccurrences(of: "urn:hailstorm:problem:", with: "") }
        }

        /// The string of the answer's key `name`, read off the bytes where it is written `"name":"…"`
        /// without escapes (an id), the whole document parsed otherwise. For an answer whose nested
        /// objects do not use that key: the first one written is taken.
        func string(named name: String) -> String? {
            if let range = valueRange(after: "\"\(name)\":\""), let end = bytes.readableBytesView[range].firstIndex(of: UInt8(ascii: "\"")),
                !bytes.readableBytesView[range.lowerBound..<end].contains(UInt8(ascii: "\\"))
            {
                return String(decoding: bytes.readableBytesView[range.lowerBound..<end], as: UTF8.self)
            }
            return json[name] as? String
        }

        /// The number of the answer's key `name` (as `string(named:)` finds it).
        func number(named name: String) -> Double? {
            if let range = valueRange(after: "\"\(name)\":") {
                let digits = bytes.readableBytesView[range].prefix { $0 != UInt8(ascii: ",") && $0 != UInt8(ascii: "}") }
                if let value = Double(String(decoding: digits, as: UTF8.self)) { return value }
            }
            return json[name] as? Double
        }

        /// Where the value behind the first `marker` starts, to the end of the body.
        private func valueRange(after marker: String) -> Range<Int>? {
            let marker = Array(marker.utf8)
            let view = bytes.readableBytesView
            var start = view.startIndex
            while start + marker.count <= view.endIndex {
                defer { start += 1 }
                guard view[start] == marker[0], view[start..<start + marker.count].elementsEqual(marker) else { continue }
                return (start + marker.count)..<view.endIndex
            }
            return nil
        }
    }

    /// One request through the gateway; a transport failure is a reply with status 0 and the error's name
    /// as its body (the caller counts it).
    func call(
        _ method: HTTPMethod, _ path: String, token: String, json: Data? = nil, idempotencyKey: String? = nil,
        timeout: TimeAmount = .seconds(30)
    ) async -> Reply? {
        guard inFlight.value < maxInFlight else {
            return Reply(status: 0, body: Data("client saturated (\(maxInFlight) requests in flight)".utf8))
        }
        inFlight.add(1)
        defer { inFlight.add(-1) }
        if let lane {
            return await lane.call(method, "/api/v1" + path, token: token, json: json, idempotencyKey: idempotencyKey, timeout: timeout)
        }
        var request = HTTPClientRequest(url: gateway + "/api/v1" + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let idempotencyKey { request.headers.add(name: "Idempotency-Key", value: idempotencyKey) }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: json))
        }
        do {
            let response = try await client.execute(request, timeout: timeout)
            let body = try await response.body.collect(upTo: 8 << 20)
            return Reply(status: Int(response.status.code), body: Data(buffer: body))
        } catch {
            return Reply(status: 0, body: Data(String(describing: error).prefix(80).utf8))
        }
    }

    /// Sends a request made by `lane.request` on `loop` and hands the reply to `done` there, without a
    /// task; false (and nothing sent) when the gateway is not plain http (those calls go through
    /// AsyncHTTPClient, in a task). A transport failure is a status-0 reply.
    func send(
        _ request: ByteBuffer, on loop: any EventLoop, timeout: TimeAmount = .seconds(30),
        _ done: @escaping @Sendable (Reply) -> Void
    ) -> Bool {
        guard let lane else { return false }
        guard inFlight.value < maxInFlight else {
            done(Reply(status: 0, body: Data("client saturated (\(maxInFlight) requests in flight)".utf8)))
            return true
        }
        inFlight.add(1)
        let inFlight = inFlight
        lane.send(request, timeout: timeout, on: loop) { reply in
            inFlight.add(-1)
            done(reply)
        }
        return true
    }

    /// A read for the audit: tried again while the system is still busy (no answer, 429, 5xx) for up to a
    /// minute, so that "not found" means a 404 and nothing else.
    func read(_ path: String) async -> Reply? {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            let reply = await call(.GET, path, token: admin)
            guard let reply, reply.status == 0 || reply.status == 429 || reply.status >= 500, ContinuousClock.now < deadline else {
                return reply
            }
            try? await Task.sleep(for: .milliseconds(reply.status == 429 ? 1000 : 200))
        }
    }

    /// A request outside the arrival schedule (grabs, trip moves, fixes), recorded from when it was sent.
    func recorded(_ endpoint: String, second: Int, _ work: () async -> Outcome) async {
        let started = ContinuousClock.now
        let outcome = await work()
        recorder.record(
            endpoint: endpoint, second: second, latencyMicros: UInt64((ContinuousClock.now - started).secondsValue * 1e6),
            outcome: outcome, lateness: 0)
    }

    static func outcome(_ reply: Reply?, expected: Set<Int>, allowedProblems: Set<String> = [], label: String) -> Outcome {
        guard let reply else { return .error("no answer") }
        if reply.status == 0 { return .error("no answer: \(String(decoding: reply.body, as: UTF8.self))") }
        if expected.contains(reply.status) { return .ok("\(label) \(reply.status)") }
        if let problem = reply.problem, allowedProblems.contains(problem) { return .ok(problem) }
        return .error("\(reply.status) \(reply.problem ?? "")")
    }
}

/// One line of an audit: a property of the system's own state after the run.
struct AuditCheck: Codable, Sendable {
    var name: String
    var passed: Bool
    var detail: String
}
