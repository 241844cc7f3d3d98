import Contracts
import Foundation
import HailKit
import MatchingEngine

/// A hexagonal grid on a city's local plane: pointy-top hexagons of a given edge, addressed by axial
/// coordinates (q, r). A point belongs to the hexagon whose centre is nearest, which is what rounding
/// the point's fractional cube coordinates finds. (Uber's H3 at resolution 8 has an edge of about 460 m,
/// the default here; H3 itself is not packaged on these machines, and a plane around the city centre is
/// exact enough within a city.)
struct HexGrid: Sendable, Hashable {
    struct Cell: Sendable, Hashable {
        var q: Int
        var r: Int
    }

    /// Edge (= circumradius) in km.
    let edgeKm: Double

    init(edgeKm: Double) {
        precondition(edgeKm > 0 && edgeKm.isFinite)
        self.edgeKm = edgeKm
    }

    func cell(at point: PlanePoint) -> Cell {
        let q = (3.0.squareRoot() / 3 * point.x - point.y / 3) / edgeKm
        let r = (2.0 / 3 * point.y) / edgeKm
        return Self.round(q: q, r: r)
    }

    func centre(of cell: Cell) -> PlanePoint {
        PlanePoint(
            x: edgeKm * 3.0.squareRoot() * (Double(cell.q) + Double(cell.r) / 2),
            y: edgeKm * 1.5 * Double(cell.r))
    }

    /// The six corners, counter-clockwise from the one at 30°.
    func corners(of cell: Cell) -> [PlanePoint] {
        let centre = centre(of: cell)
        return (0..<6).map { i in
            let angle = Double.pi / 180 * (60 * Double(i) + 30)
            return PlanePoint(x: centre.x + edgeKm * cos(angle), y: centre.y + edgeKm * sin(angle))
        }
    }

    /// Cube rounding: round each of the three cube coordinates, then fix the one that moved most so
    /// that they sum to zero again.
    static func round(q: Double, r: Double) -> Cell {
        let s = -q - r
        var rq = q.rounded(), rr = r.rounded()
        let rs = s.rounded()
        let dq = abs(rq - q), dr = abs(rr - r), ds = abs(rs - s)
        if dq > dr && dq > ds {
            rq = -rr - rs
        } else if dr > ds {
            rr = -rq - rs
        }
        return Cell(q: Int(rq), r: Int(rr))
    }
}

/// The cities analytics counts in, each with its plane and grid. From `analytics.cities`: `Name@lat,lon,radiusKm`
/// entries separated by `;` (default `Berlin@52.52,13.405,40`); a name is letters, digits and `-`.
/// A point in no city is counted for the platform only (city `elsewhere`, no cell).
struct CityGrids: Sendable {
    struct City: Sendable {
        let name: String
        let centre: GeoPoint
        let radiusKm: Double
        let projection: LocalProjection
    }

    static let elsewhere = "elsewhere"
    static let defaultSpecification = "Berlin@52.52,13.405,40"

    let cities: [City]
    let grid: HexGrid

    init(specification: String, edgeMeters: Double) throws {
        guard edgeMeters.isFinite, (20...20_000).contains(edgeMeters) else {
            throw ConfigurationError("analytics.cell.edge.m must be from 20 to 20000 metres")
        }
        var cities: [City] = []
        for entry in specification.split(separator: ";") where !entry.trimmingCharacters(in: .whitespaces).isEmpty {
            let parts = entry.split(separator: "@", maxSplits: 1)
            let name = parts.first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            let fields = parts.count == 2 ? parts[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } : []
            guard parts.count == 2, fields.count == 3, let lat = Double(fields[0]), let lon = Double(fields[1]),
                let radius = Double(fields[2]), Bounds.latitude.contains(lat), Bounds.longitude.contains(lon), radius > 0, radius <= 500,
                !name.isEmpty, name != Self.elsewhere, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
            else {
                throw ConfigurationError("analytics.cities: '\(entry)' is not Name@lat,lon,radiusKm (a name of letters, digits and -)")
            }
            cities.append(City(
                name: name, centre: GeoPoint(lat: lat, lon: lon), radiusKm: radius,
                projection: LocalProjection(origin: GeoCoordinate(latitude: lat, longitude: lon))))
        }
        guard !cities.isEmpty else { throw ConfigurationError("analytics.cities names no city") }
        self.cities = cities
        self.grid = HexGrid(edgeKm: edgeMeters / 1000)
    }

    /// Where a point is counted: its city and cell id (`Berlin:3:-7`), or `elsewhere` and no cell.
    func place(_ point: GeoPoint) -> (city: String, cell: String?) {
        guard point.isValid,
            let city = cities.map({ ($0, $0.centre.distanceKm(to: point)) }).filter({ $0.1 <= $0.0.radiusKm }).min(by: { $0.1 < $1.1 })?.0
        else { return (Self.elsewhere, nil) }
        let cell = grid.cell(at: city.projection.project(GeoCoordinate(latitude: point.lat, longitude: point.lon)))
        return (city.name, "\(city.name):\(cell.q):\(cell.r)")
    }

    /// A cell id's city and hexagon, or nil when it names none.
    func cell(named id: String) -> (city: City, cell: HexGrid.Cell)? {
        let parts = id.split(separator: ":")
        guard parts.count == 3, let q = Int(parts[1]), let r = Int(parts[2]), abs(q) < 1_000_000, abs(r) < 1_000_000,
            let city = cities.first(where: { $0.name == parts[0] })
        else { return nil }
        return (city, HexGrid.Cell(q: q, r: r))
    }

    func centre(of id: String) -> GeoPoint? {
        guard let (city, cell) = cell(named: id) else { return nil }
        return geo(city.projection.unproject(grid.centre(of: cell)))
    }

    /// The closed ring of a cell's corners.
    func polygon(of id: String) -> [GeoPoint]? {
        guard let (city, cell) = cell(named: id) else { return nil }
        let ring = grid.corners(of: cell).map { geo(city.projection.unproject($0)) }
        return ring + [ring[0]]
    }

    func city(named name: String) -> City? { cities.first { $0.name == name } }

    private func geo(_ coordinate: GeoCoordinate) -> GeoPoint { GeoPoint(lat: coordinate.latitude, lon: coordinate.longitude) }
}
