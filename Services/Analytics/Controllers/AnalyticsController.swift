import Contracts
import Foundation
import HailKit
import HTTPTypes
import Hummingbird
import Logging
import RedisKit

/// The analytics service's HTTP API (`AnalyticsAPI`): admins (through the gateway) and services (the
/// command centre); the rebuild admins only.
struct AnalyticsController: Sendable {
    let parts: AnalyticsKit
    let redis: RedisClient
    let logger: Logger

    /// The longest range one query may cover, and the most steps it may answer.
    static let maxRangeSeconds = 31.0 * 86_400
    static let maxSteps = 2000

    func register(on router: some RouterMethods<HailRequestContext>) {
        let store = parts.store
        get(router, AnalyticsAPI.kpis) { request, _ in
            let query = request.uri.queryParameters
            let range = try Self.range(query)
            let step: Int
            switch query.get("step") ?? "minute" {
            case "minute": step = 60
            case "hour": step = 3600
            default: throw Problem.invalidField("step", "must be minute or hour")
            }
            guard range.minutes / (step / 60) <= Self.maxSteps else {
                throw Problem.invalidField("step", "gives more than \(Self.maxSteps) steps over this range: use step=hour or a shorter range")
            }
            let city = try city(query)
            let cell = try query.get("cell").map { cell -> String in
                guard parts.grids.cell(named: cell) != nil else {
                    throw Problem.invalidField("cell", "is not a cell id (City:q:r, as the heatmap names them)")
                }
                return cell
            }
            let (total, steps) = try await store.kpis(range, step: step, city: city, cell: cell)
            return AnalyticsAPI.KPIs(
                from: range.from, to: range.to, step: step == 60 ? "minute" : "hour", city: city, cell: cell, total: total, steps: steps)
        }
        get(router, AnalyticsAPI.funnel) { request, _ in
            let query = request.uri.queryParameters
            let range = try Self.range(query)
            let city = try city(query)
            return AnalyticsAPI.Funnel(from: range.from, to: range.to, city: city, steps: try await store.funnel(range, city: city))
        }
        get(router, AnalyticsAPI.heatmap) { request, _ in
            let query = request.uri.queryParameters
            let kinds: [String: AnalyticsStore.Metric] = ["pickups": .pickups, "dropoffs": .dropoffs, "supply": .supply, "demand": .orders]
            guard let kind = query.get("kind"), let metric = kinds[kind] else {
                throw Problem.invalidField("kind", "must be one of pickups, dropoffs, supply, demand")
            }
            let range = try Self.range(query)
            let cells = try await store.heatmap(range, metric: metric, city: try city(query))
            let features = cells.compactMap { value -> GeoJSON.Feature<AnalyticsAPI.CellValue>? in
                guard let ring = parts.grids.polygon(of: value.cell) else { return nil }
                return GeoJSON.Feature(geometry: .polygon(ring), properties: value)
            }
            return AnalyticsAPI.Heatmap(
                kind: kind, from: range.from, to: range.to, edgeMeters: parts.grids.grid.edgeKm * 1000,
                features: features.sorted { $0.properties.cell < $1.properties.cell })
        }
        get(router, AnalyticsAPI.tripPath) { request, context in
            let id = try context.parameters.require("id")
            guard (1...100).contains(id.count) else { throw Problem.invalidField("id", "is not an order id") }
            let tolerance = try request.uri.queryParameters.get("tolerance").map { text -> Double in
                guard let value = Double(text), value.isFinite, (0.1...10_000).contains(value) else {
                    throw Problem.invalidField("tolerance", "must be a number of metres from 0.1 to 10000")
                }
                return value
            } ?? parts.analyser.toleranceMeters
            guard let trip = try await store.trip(id) else { throw Problem.notFound("Analytics has seen no order \(id)") }
            let found = parts.analysis.analyse(trip.facts, fixes: trip.fixes, toleranceMeters: tolerance)
            var features: [GeoJSON.Feature<AnalyticsAPI.PathPart>] = [
                GeoJSON.Feature(geometry: .lineString(found.driven), properties: .init(part: "driven")),
                GeoJSON.Feature(geometry: .lineString(found.simplified), properties: .init(part: "simplified")),
                GeoJSON.Feature(geometry: .lineString([trip.facts.pickup, trip.facts.dropoff]), properties: .init(part: "direct")),
            ]
            for stay in found.analysis.stays {
                features.append(GeoJSON.Feature(
                    geometry: .point(GeoPoint(lat: stay.lat, lon: stay.lon)), properties: .init(part: "stay", from: stay.from, to: stay.to)))
            }
            return AnalyticsAPI.TripPath(trip: found.analysis, features: features)
        }
        get(router, AnalyticsAPI.anomalies) { request, _ in
            let range = try Self.range(request.uri.queryParameters)
            return AnalyticsAPI.AnomalyList(
                from: range.from, to: range.to, trips: try await store.anomalies(from: range.from, to: range.to, limit: 1000))
        }
        get(router, AnalyticsAPI.od) { request, _ in
            let query = request.uri.queryParameters
            let range = try Self.range(query)
            let top = try query.get("top").map { text -> Int in
                guard let value = Int(text), (1...1000).contains(value) else {
                    throw Problem.invalidField("top", "must be a whole number from 1 to 1000")
                }
                return value
            } ?? 10
            let flows = try await store.flows(range, top: top).compactMap { flow -> AnalyticsAPI.Flow? in
                guard let from = parts.grids.centre(of: flow.from), let to = parts.grids.centre(of: flow.to) else { return nil }
                return AnalyticsAPI.Flow(city: flow.city, fromCell: flow.from, toCell: flow.to, fromCentre: from, toCentre: to, trips: flow.trips)
            }
            return AnalyticsAPI.Flows(from: range.from, to: range.to, flows: flows)
        }
        router.on(AnalyticsAPI.rebuild) { _, _, context in
            _ = try context.requireRole(.admin)
            let started = Date()
            // The rebuild runs to its end even when the caller stops waiting (its deadline passes, its
            // connection closes): a rebuild cut short would leave the figures half read until the next
            // start. `Task` (not a child task) does not inherit the request's cancellation.
            let ingest = parts.ingest, analyser = parts.analyser, logger = logger, redis = redis
            let job = Task { try await ingest.rebuild(redis: redis, analyser: analyser, logger: logger) }
            let events = try await job.value
            context.logger.notice("analytics rebuilt", metadata: ["events": "\(events)"])
            return AnalyticsAPI.Rebuilt(events: events, seconds: Date().timeIntervalSince(started))
        }
    }

    /// A GET route of the API, for admins and services (the command centre's page), answered as JSON.
    private func get<Response: Encodable & Sendable>(
        _ router: some RouterMethods<HailRequestContext>, _ endpoint: Endpoint<NoContent, Response>,
        _ handler: @escaping @Sendable (Request, HailRequestContext) async throws -> Response
    ) {
        router.on(RouterPath(endpoint.path), method: endpoint.method) { request, context in
            _ = try context.requireRole(.admin, .service)
            return try JSONBody.response(try await handler(request, context), status: .ok)
        }
    }

    private func city(_ query: Hummingbird.Parameters) throws -> String? {
        try query.get("city").map { name in
            guard parts.grids.city(named: name) != nil || name == CityGrids.elsewhere else {
                throw Problem.invalidField("city", "must be one of \((parts.grids.cities.map(\.name) + [CityGrids.elsewhere]).joined(separator: ", "))")
            }
            return name
        }
    }

    /// `from` and `to` (seconds since 1970): by default the last hour.
    static func range(_ query: Hummingbird.Parameters, now: Double = Date().timeIntervalSince1970) throws -> MinuteRange {
        func time(_ name: String) throws -> Double? {
            try query.get(name).map { text in
                guard let value = Double(text), Bounds.isEpochSeconds(value) else {
                    throw Problem.invalidField(name, "must be a time in seconds since 1970, before 2100")
                }
                return value
            }
        }
        let to = try time("to") ?? now
        let from = try time("from") ?? to - 3600
        guard from < to else { throw Problem.invalidField("from", "must be before to") }
        guard to - from <= maxRangeSeconds else { throw Problem.invalidField("from", "the range may cover 31 days at most") }
        return MinuteRange(from: from, to: to)
    }
}
