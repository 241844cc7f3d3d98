import AsyncHTTPClient
import Contracts
import Foundation
import HailKit
import NIOCore

/// What the command centre reads from Prometheus's HTTP API (`/api/v1/targets`, `/api/v1/query`,
/// `/api/v1/alerts`): the scraped instances with their RED figures, and the alerts firing.
struct PrometheusReader: Sendable {
    /// `http://host:port`, without a trailing slash.
    let base: String
    let http: HTTPClient
    let timeout: TimeAmount

    struct Unreachable: Error, CustomStringConvertible {
        var description: String
    }

    private func get(_ path: String, query: [String: String] = [:]) async throws -> [String: Any] {
        let request = HTTPClientRequest(url: base + path + ServiceClient.queryString(query))
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch {
            throw Unreachable(description: "Prometheus at \(base) cannot be reached: \(error)")
        }
        let body = try await response.body.collect(upTo: 16 << 20)
        guard response.status == .ok,
            let document = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
            document["status"] as? String == "success"
        else {
            throw Unreachable(description: "Prometheus at \(base) answered \(response.status.code) to \(path)")
        }
        return document["data"] as? [String: Any] ?? [:]
    }

    /// An instant query's samples, by `instance` label.
    private func byInstance(_ query: String) async throws -> [String: Double] {
        let data = try await get("/api/v1/query", query: ["query": query])
        var values: [String: Double] = [:]
        for sample in data["result"] as? [[String: Any]] ?? [] {
            guard let metric = sample["metric"] as? [String: String], let instance = metric["instance"],
                let value = sample["value"] as? [Any], value.count == 2, let text = value[1] as? String, let number = Double(text),
                number.isFinite
            else { continue }
            values[instance] = number
        }
        return values
    }

    /// Every scrape target (up or down) with its last minute's requests, errors and p99 and its restarts
    /// in the last hour, from the recording rules in `hailstorm-rules.yml`.
    func board(now: Double = Date().timeIntervalSince1970) async throws -> CommandAPI.Board {
        let targets = try await get("/api/v1/targets", query: ["state": "active"])
        async let rates = byInstance("instance:hailstorm_requests:rate1m")
        async let errors = byInstance("instance:hailstorm_errors:rate1m")
        async let p99 = byInstance("instance:hailstorm_request_duration_seconds:p99_1m")
        async let restarts = byInstance("max by (job, instance) (resets(hb_requests[1h]))")
        let (rate, error, slow, reset) = try await (rates, errors, p99, restarts)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var instances: [CommandAPI.BoardInstance] = []
        for target in targets["activeTargets"] as? [[String: Any]] ?? [] {
            let labels = target["labels"] as? [String: String] ?? [:]
            guard let service = labels["job"], let instance = labels["instance"] else { continue }
            let scraped = (target["lastScrape"] as? String).flatMap { formatter.date(from: $0) }?.timeIntervalSince1970
            let lastError = (target["lastError"] as? String).flatMap { $0.isEmpty ? nil : $0 }
            instances.append(CommandAPI.BoardInstance(
                service: service, instance: instance, health: target["health"] as? String == "up" ? "up" : "down",
                lastScrape: scraped.flatMap { $0 > 0 ? $0 : nil }, lastError: lastError, requestsPerSecond: rate[instance],
                errorsPerSecond: error[instance], p99Seconds: slow[instance], restarts: reset[instance].map { Int($0.rounded()) }))
        }
        instances.sort { ($0.service, $0.instance) < ($1.service, $1.instance) }
        return CommandAPI.Board(at: now, prometheus: base, instances: instances)
    }

    /// The alerts firing now (pending ones are not yet alerts).
    func firingAlerts() async throws -> [CommandStore.Observed] {
        let data = try await get("/api/v1/alerts")
        var firing: [CommandStore.Observed] = []
        for alert in data["alerts"] as? [[String: Any]] ?? [] {
            guard alert["state"] as? String == "firing", let labels = alert["labels"] as? [String: String],
                let name = labels["alertname"]
            else { continue }
            let annotations = alert["annotations"] as? [String: String] ?? [:]
            firing.append(CommandStore.Observed(
                fingerprint: Self.fingerprint(labels), name: name, source: "prometheus", severity: labels["severity"] ?? "warning",
                summary: annotations["summary"] ?? annotations["description"] ?? name, labels: labels))
        }
        return firing
    }

    /// The labels, sorted, as one line: the same alert of the same instance has the same fingerprint.
    static func fingerprint(_ labels: [String: String]) -> String {
        labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }
}
