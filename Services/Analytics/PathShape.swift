import Contracts
import Foundation
import MatchingEngine

/// Geometry of driven paths on a local plane (km).
enum PathShape {
    /// The distance from `p` to the segment `a`–`b`.
    static func distance(_ p: PlanePoint, toSegment a: PlanePoint, _ b: PlanePoint) -> Double {
        let dx = b.x - a.x, dy = b.y - a.y
        let length2 = dx * dx + dy * dy
        guard length2 > 0 else { return p.distance(to: a) }
        let t = min(1, max(0, ((p.x - a.x) * dx + (p.y - a.y) * dy) / length2))
        return p.distance(to: PlanePoint(x: a.x + t * dx, y: a.y + t * dy))
    }

    /// Douglas–Peucker: the indices of the points kept (the first, the last, and every point that lies
    /// farther than `tolerance` from the simplified line between its neighbours kept), in order. Every
    /// point dropped is within `tolerance` of the segment that replaced it. With an explicit stack, so
    /// a path of a hundred thousand fixes cannot overflow the call stack.
    static func simplify(_ points: [PlanePoint], tolerance: Double) -> [Int] {
        guard points.count > 2 else { return Array(points.indices) }
        var keep = [Bool](repeating: false, count: points.count)
        keep[0] = true
        keep[points.count - 1] = true
        var stack = [(0, points.count - 1)]
        while let (first, last) = stack.popLast() {
            guard last > first + 1 else { continue }
            var farthest = first, distanceMax = -1.0
            for i in (first + 1)..<last {
                let d = distance(points[i], toSegment: points[first], points[last])
                if d > distanceMax {
                    distanceMax = d
                    farthest = i
                }
            }
            if distanceMax > tolerance {
                keep[farthest] = true
                stack.append((first, farthest))
                stack.append((farthest, last))
            }
        }
        return keep.indices.filter { keep[$0] }
    }

    /// Length of a polyline.
    static func length(_ points: some Collection<PlanePoint>) -> Double {
        zip(points, points.dropFirst()).reduce(0) { $0 + $1.0.distance(to: $1.1) }
    }

    /// Stay points: from each fix, the run of following fixes within `radiusKm` of it; a run lasting at
    /// least `minSeconds` is a stay (at the run's mean position), and the search goes on after it.
    static func stays(_ points: [PlanePoint], times: [Double], radiusKm: Double, minSeconds: Double) -> [(centre: PlanePoint, from: Double, to: Double)] {
        var stays: [(centre: PlanePoint, from: Double, to: Double)] = []
        var i = 0
        while i < points.count {
            var j = i + 1
            while j < points.count, points[i].distance(to: points[j]) <= radiusKm { j += 1 }
            if times[j - 1] - times[i] >= minSeconds {
                let run = points[i..<j]
                let centre = PlanePoint(
                    x: run.reduce(0) { $0 + $1.x } / Double(run.count), y: run.reduce(0) { $0 + $1.y } / Double(run.count))
                stays.append((centre, times[i], times[j - 1]))
                i = j
            } else {
                i += 1
            }
        }
        return stays
    }
}

/// How a trip's path is judged. Keys `analytics.detour.ratio` (1.5), `analytics.corridor.km` (1.0),
/// `analytics.stay.radius.m` (50), `analytics.stay.seconds` (120), `analytics.long.stop.seconds` (300),
/// `analytics.dropoff.km` (0.5), `analytics.early.share` (0.5).
struct PathRules: Sendable {
    /// `route-deviation` when driven ÷ direct is above this (for trips of 0.5 km or more)…
    var detourRatio = 1.5
    /// …or when the trip went farther than this from the straight line between pickup and drop-off.
    var corridorKm = 1.0
    var stayRadiusKm = 0.05
    var staySeconds = 120.0
    /// `long-stop`: a stay during the trip at least this long.
    var longStopSeconds = 300.0
    /// `ended-away-from-dropoff`: the last fix farther than this from the drop-off.
    var dropoffKm = 0.5
    /// `ended-early`: ended away from the drop-off having driven less than this share of the direct distance.
    var earlyShare = 0.5
}

/// A trip as analytics knows it, and what its fixes say about it.
struct TripFacts: Sendable {
    var orderID: String
    var driverID: String?
    var state: String
    var pickup: GeoPoint
    var dropoff: GeoPoint
    var assignedAt: Double?
    var startedAt: Double?
    var completedAt: Double?
}

struct PathAnalysis {
    let rules: PathRules

    /// `fixes` in time order, each `(point, time)`.
    func analyse(
        _ trip: TripFacts, fixes: [(GeoPoint, Double)], toleranceMeters: Double
    ) -> (analysis: AnalyticsAPI.TripAnalysis, driven: [GeoPoint], simplified: [GeoPoint]) {
        let projection = LocalProjection(origin: GeoCoordinate(latitude: trip.pickup.lat, longitude: trip.pickup.lon))
        func plane(_ p: GeoPoint) -> PlanePoint { projection.project(GeoCoordinate(latitude: p.lat, longitude: p.lon)) }
        func geo(_ p: PlanePoint) -> GeoPoint {
            let c = projection.unproject(p)
            return GeoPoint(lat: c.latitude, lon: c.longitude)
        }
        let points = fixes.map { plane($0.0) }
        let times = fixes.map(\.1)
        let pickup = plane(trip.pickup), dropoff = plane(trip.dropoff)
        let kept = PathShape.simplify(points, tolerance: toleranceMeters / 1000)

        // The trip proper: from the last fix at or before the start (in_trip) on; the whole path when it
        // never started.
        let legStart: Int
        if let start = trip.startedAt {
            legStart = times.lastIndex { $0 <= start } ?? times.firstIndex { $0 > start } ?? points.count
        } else {
            legStart = 0
        }
        let leg = Array(points[legStart...])
        let drivenKm = PathShape.length(leg)
        let directKm = pickup.distance(to: dropoff)
        let detour = directKm > 0 ? drivenKm / directKm : nil
        let offCorridor = leg.map { PathShape.distance($0, toSegment: pickup, dropoff) }.max() ?? 0
        let endToDropoff = points.last.map { $0.distance(to: dropoff) }
        let stays = PathShape.stays(points, times: times, radiusKm: rules.stayRadiusKm, minSeconds: rules.staySeconds)
        let tripStart = trip.startedAt ?? times.first ?? 0
        let tripStays = stays.filter { $0.to > tripStart }
        let longest = tripStays.map { $0.to - max($0.from, tripStart) }.max() ?? 0

        var flags: [String] = []
        if !leg.isEmpty, (directKm >= 0.5 && (detour ?? 0) > rules.detourRatio) || offCorridor > rules.corridorKm {
            flags.append("route-deviation")
        }
        if longest >= rules.longStopSeconds { flags.append("long-stop") }
        if trip.state == "completed" || trip.state == "paid", let endToDropoff {
            if endToDropoff > rules.dropoffKm {
                flags.append("ended-away-from-dropoff")
                if drivenKm < rules.earlyShare * directKm { flags.append("ended-early") }
            }
        }
        let analysis = AnalyticsAPI.TripAnalysis(
            orderID: trip.orderID, driverID: trip.driverID, state: trip.state, assignedAt: trip.assignedAt, startedAt: trip.startedAt,
            completedAt: trip.completedAt,
            metrics: AnalyticsAPI.PathMetrics(
                fixes: points.count, simplifiedPoints: kept.count, toleranceMeters: toleranceMeters, drivenKm: drivenKm, directKm: directKm,
                detourRatio: detour, maxOffCorridorKm: offCorridor, endToDropoffKm: endToDropoff, longestStopSeconds: longest),
            flags: flags,
            stays: stays.map { let c = geo($0.centre); return AnalyticsAPI.StayPoint(lat: c.lat, lon: c.lon, from: $0.from, to: $0.to) })
        return (analysis, fixes.map(\.0), kept.map { fixes[$0].0 })
    }
}
