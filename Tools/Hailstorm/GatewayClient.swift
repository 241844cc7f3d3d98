import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// The demo's way to the gateway: JSON over HTTP with the caller's token, riding out a gateway or a
/// service that is restarting (connection refused, 502/503/504) by trying again for a while — as a rider's
/// app does, and waiting when the gateway's rate limit says so (429). Only requests safe to repeat are retried: reads, and writes with an Idempotency-Key or whose
/// repeat the service answers harmlessly (a repeated grab, a repeated trip move).
struct GatewayClient: Sendable {
    let base: String
    let client: HTTPClient
    /// How long a request keeps trying through outages.
    var patience: Duration = .seconds(30)

    struct Answer: Sendable {
        var status: Int
        var body: Data

        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var problemType: String? { (json["type"] as? String)?.replacingOccurrences(of: "urn:hailstorm:problem:", with: "") }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder().decode(T.self, from: body) }
    }

    func send(
        _ method: HTTPMethod, _ path: String, token: String? = nil, json: [String: Any]? = nil, idempotencyKey: String? = nil
    ) async throws -> Answer {
        let body = try json.map { try JSONSerialization.data(withJSONObject: $0) }
        let deadline = ContinuousClock.now + patience
        while true {
            var request = HTTPClientRequest(url: base + "/api/v1" + path)
            request.method = method
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            if let idempotencyKey { request.headers.add(name: "Idempotency-Key", value: idempotencyKey) }
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(data: body))
            }
            do {
                let response = try await client.execute(request, timeout: .seconds(15))
                let bytes = try await response.body.collect(upTo: 4 << 20)
                let answer = Answer(status: Int(response.status.code), body: Data(buffer: bytes))
                if [429, 502, 503, 504].contains(answer.status), ContinuousClock.now < deadline {
                    // A 429 was refused before anything happened: waiting as told is always safe.
                    let wait = response.headers.first(name: "Retry-After").flatMap(Int.init).map { Duration.seconds($0) } ?? .milliseconds(300)
                    try await Task.sleep(for: wait)
                    continue
                }
                return answer
            } catch {
                guard ContinuousClock.now < deadline else { throw error }
                try await Task.sleep(for: .milliseconds(300))
            }
        }
    }
}
