import Foundation
import Histogram

/// What a run measured and what its audit found: `report.json`, and `report.html` with the charts drawn
/// as inline SVG (no script, no network: it opens offline).
struct Report: Codable, Sendable {
    struct Endpoint: Codable, Sendable {
        var name: String
        var count: Int
        /// Milliseconds: p50, p90, p99, p99.9, max.
        var latencyMs: [String: Double]
        /// Latency (ms) at each point of the percentile curve, for the chart.
        var curve: [[Double]]
    }

    struct Second: Codable, Sendable {
        var second: Int
        var count: Int
        var errors: Int
        var p50Ms: Double
        var p99Ms: Double
    }

    var scenario: String
    var profile: String
    var offeredRate: Double
    var durationSeconds: Double
    var startedAt: String
    var gateway: String
    var due: Int
    var sent: Int
    /// Due requests the load generator could not start (too many in flight): the offered load exceeded what
    /// the system answered. Reported next to the audit, which judges the system's state, not its speed.
    var dropped: Int
    /// Requests sent more than 10 ms after their due time.
    var late: Int
    var completed: Int
    /// Scheduled requests answered per second of the schedule's duration.
    var achievedRate: Double
    var outcomes: [String: Int]
    var errors: [String: Int]
    var endpoints: [Endpoint]
    var timeline: [Second]
    var audit: [AuditCheck]
    var figures: [String: [String: Double]]
    /// `--reference`: redis-benchmark running the claim's Lua script on the same Redis right after the run.
    var reference: Reference?
    var passed: Bool

    struct Reference: Codable, Sendable {
        var redisBenchmarkLuaRate: Double
        var redisBenchmarkLuaP50Ms: Double
        var redisBenchmarkLuaP99Ms: Double
        var connections: Int
        /// This run's achieved rate ÷ the Lua script's raw rate.
        var ratio: Double
    }

    static func percentiles(_ histogram: Histogram<UInt64>, scale: Double) -> [String: Double] {
        var result: [String: Double] = ["count": Double(histogram.totalCount)]
        for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)] {
            result[name] = Double(histogram.valueAtPercentile(p)) / scale
        }
        result["max"] = Double(histogram.max) / scale
        return result
    }

    static func endpoint(_ name: String, _ histogram: Histogram<UInt64>) -> Endpoint {
        var latency = percentiles(histogram, scale: 1000)
        latency.removeValue(forKey: "count")
        let points = [0.0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]
        return Endpoint(
            name: name, count: Int(histogram.totalCount), latencyMs: latency,
            curve: points.map { [$0, Double(histogram.valueAtPercentile($0)) / 1000] })
    }

    func write(to folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: folder + "/report.json"))
        try html().write(toFile: folder + "/report.html", atomically: true, encoding: .utf8)
    }

    // MARK: HTML

    func html() -> String {
        let rows = endpoints.map { e -> String in
            "<tr><td>\(escape(e.name))</td><td>\(e.count)</td>" + ["p50", "p90", "p99", "p99.9", "max"].map { "<td>\(format(e.latencyMs[$0] ?? 0))</td>" }.joined() + "</tr>"
        }.joined(separator: "\n")
        let checks = audit.map { c -> String in
            "<tr class=\"\(c.passed ? "pass" : "fail")\"><td>\(c.passed ? "PASS" : "FAIL")</td><td>\(escape(c.name))</td><td>\(escape(c.detail))</td></tr>"
        }.joined(separator: "\n")
        let extra = figures.sorted { $0.key < $1.key }.map { name, values -> String in
            "<tr><td>\(escape(name))</td>" + ["p50", "p90", "p99", "p99.9", "max"].map { "<td>\(format(values[$0] ?? 0))</td>" }.joined() + "</tr>"
        }.joined(separator: "\n")
        let problems = errors.sorted { $0.value > $1.value }.map { "<li>\(escape($0.key)): \($0.value)</li>" }.joined()
        let answers = outcomes.sorted { $0.value > $1.value }.map { "<li>\(escape($0.key)): \($0.value)</li>" }.joined()
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>hailstorm-load \(escape(scenario))</title>
            <style>
            body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
            table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
            td:first-child,th:first-child{text-align:left}.pass td:first-child{color:#080;font-weight:bold}.fail td:first-child{color:#c00;font-weight:bold}
            .verdict{font-size:1.4em;font-weight:bold;color:\(passed ? "#080" : "#c00")}svg{background:#fafafa;border:1px solid #ddd}
            </style></head><body>
            <h1>hailstorm-load: \(escape(scenario))</h1>
            <p class="verdict">Audit \(passed ? "passed" : "FAILED")</p>
            <p>Profile <b>\(escape(profile))</b> at an offered \(format(offeredRate)) requests/s for \(format(durationSeconds)) s against \(escape(gateway)), started \(escape(startedAt)).
            Due \(due), sent \(sent), dropped by the client \(dropped), late (&gt;10 ms behind schedule) \(late), completed \(completed);
            achieved \(format(achievedRate)) scheduled requests/s. Latency is measured from each request's due time (open loop).</p>
            <h2>Audit</h2><table><tr><th>result</th><th>check</th><th>detail</th></tr>\(checks)</table>
            <h2>Latency by endpoint (ms)</h2>
            <table><tr><th>endpoint</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\(rows)</table>
            \(extra.isEmpty ? "" : "<h2>Other figures (ms)</h2><table><tr><th>figure</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\(extra)</table>")
            \(reference.map { r in "<h2>Reference</h2><p>redis-benchmark running the claim's Lua script on the same Redis, \(r.connections) connections: \(format(r.redisBenchmarkLuaRate)) calls/s, p50 \(format(r.redisBenchmarkLuaP50Ms)) ms, p99 \(format(r.redisBenchmarkLuaP99Ms)) ms. This run achieved \(format(achievedRate))/s: <b>\(String(format: "%.3f", r.ratio))</b> of it.</p>" } ?? "")
            <h2>Latency over time</h2>\(timelineChart())
            <h2>Latency by percentile</h2>\(percentileChart())
            <h2>Answers</h2><ul>\(answers)</ul>\(problems.isEmpty ? "" : "<h2>Errors</h2><ul>\(problems)</ul>")
            </body></html>
            """
    }

    private func timelineChart() -> String {
        guard !timeline.isEmpty else { return "<p>No requests.</p>" }
        let width = 1000.0, height = 300.0, left = 60.0, bottom = 30.0
        let maxSecond = Double(max(timeline.map(\.second).max() ?? 1, 1))
        let maxLatency = max(timeline.map(\.p99Ms).max() ?? 1, 1)
        let maxCount = Double(max(timeline.map(\.count).max() ?? 1, 1))
        func x(_ s: Double) -> Double { left + s / maxSecond * (width - left - 20) }
        func y(_ v: Double, _ top: Double) -> Double { height - bottom - v / top * (height - bottom - 20) }
        let bars = timeline.map { s -> String in
            let barHeight = Double(s.count) / maxCount * (height - bottom - 20)
            return "<rect x=\"\(x(Double(s.second)) - 3)\" y=\"\(height - bottom - barHeight)\" width=\"6\" height=\"\(barHeight)\" fill=\"#dde\"/>"
        }.joined()
        func line(_ value: (Second) -> Double, _ color: String) -> String {
            let points = timeline.map { "\(x(Double($0.second))),\(y(value($0), maxLatency))" }.joined(separator: " ")
            return "<polyline points=\"\(points)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>"
        }
        return """
            <svg width="\(Int(width))" height="\(Int(height))" xmlns="http://www.w3.org/2000/svg">\(bars)
            \(line({ $0.p50Ms }, "#36c"))\(line({ $0.p99Ms }, "#c33"))
            <line x1="\(left)" y1="\(height - bottom)" x2="\(width)" y2="\(height - bottom)" stroke="#999"/>
            <text x="5" y="20">\(format(maxLatency)) ms</text><text x="5" y="\(height - bottom)">0</text>
            <text x="\(left)" y="\(height - 8)">0 s</text><text x="\(width - 60)" y="\(height - 8)">\(Int(maxSecond)) s</text>
            <text x="\(width - 440)" y="20" fill="#36c">p50</text><text x="\(width - 400)" y="20" fill="#c33">p99</text>
            <text x="\(width - 360)" y="20" fill="#88a">bars: requests per second (max \(Int(maxCount)))</text></svg>
            """
    }

    private func percentileChart() -> String {
        guard !endpoints.isEmpty else { return "" }
        let width = 1000.0, height = 320.0, left = 60.0, bottom = 30.0
        // x: the number of nines (0 → p0, 1 → p90, 2 → p99, 3 → p99.9, 4 → p99.99).
        func nines(_ p: Double) -> Double { p >= 100 ? 4 : min(4, -log10(1 - p / 100)) }
        let top = max(endpoints.flatMap { $0.curve.map { $0[1] } }.max() ?? 1, 1)
        func x(_ p: Double) -> Double { left + nines(p) / 4 * (width - left - 20) }
        func y(_ v: Double) -> Double { height - bottom - v / top * (height - bottom - 20) }
        let colors = ["#36c", "#c33", "#393", "#c90", "#939", "#399", "#663", "#a55"]
        var svg = ""
        for (index, endpoint) in endpoints.enumerated() {
            let color = colors[index % colors.count]
            let points = endpoint.curve.map { "\(x($0[0])),\(y($0[1]))" }.joined(separator: " ")
            svg += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            svg += "<text x=\"\(left + 10)\" y=\"\(20 + 16 * Double(index))\" fill=\"\(color)\">\(escape(endpoint.name))</text>"
        }
        for (label, p) in [("p0", 0.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("p99.99", 99.99)] {
            svg += "<text x=\"\(x(p) - 10)\" y=\"\(height - 8)\">\(label)</text>"
        }
        return """
            <svg width="\(Int(width))" height="\(Int(height))" xmlns="http://www.w3.org/2000/svg">\(svg)
            <line x1="\(left)" y1="\(height - bottom)" x2="\(width)" y2="\(height - bottom)" stroke="#999"/>
            <text x="5" y="20">\(format(top)) ms</text><text x="5" y="\(height - bottom)">0</text></svg>
            """
    }

    private func format(_ value: Double) -> String {
        value >= 100 ? String(Int(value.rounded())) : String(format: "%.2f", value)
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
