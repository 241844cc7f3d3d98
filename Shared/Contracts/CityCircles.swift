import Foundation

/// Cities as circles on the map, each with the time zone its hours and days are counted in, from a
/// setting of `Name@lat,lon,radiusMeters,TimeZone` entries separated by `;`
/// (`Berlin@52.52,13.405,30000,Europe/Berlin`). The ad service sells and serves by these cities (`ad.cities`);
/// when it is split into shards, each city belongs to one shard (`AdAPI.shard(ofCity:count:)`), and the
/// gateway, given the same list, sends a request about a place to the shard owning its city.
public struct CityCircles: Sendable {
    public struct City: Sendable, Hashable {
        public let name: String
        public let centre: GeoPoint
        public let radiusMeters: Double
        public let timeZone: TimeZone
    }

    public let all: [City]

    /// Berlin alone: what `ad.cities` is when it is not set.
    public static let defaultSpecification = "Berlin@52.52,13.405,30000,Europe/Berlin"

    /// The cities of `specification`; an entry that is not `Name@lat,lon,radiusMeters,TimeZone` (a point
    /// on the earth, a radius of 1 m to 500 km, a known IANA zone), a name given twice or no city at all is
    /// refused with the reason.
    public init(specification: String) throws(CityCirclesError) {
        var cities: [City] = []
        for entry in specification.split(separator: ";") where !entry.trimmingCharacters(in: .whitespaces).isEmpty {
            let parts = entry.split(separator: "@", maxSplits: 1)
            let fields = parts.count == 2 ? parts[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } : []
            let name = parts.first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            guard parts.count == 2, !name.isEmpty, fields.count == 4, let lat = Double(fields[0]), let lon = Double(fields[1]),
                let radius = Double(fields[2]), Bounds.latitude.contains(lat), Bounds.longitude.contains(lon), radius > 0, radius <= 500_000,
                let zone = TimeZone(identifier: fields[3])
            else {
                throw CityCirclesError(description: "'\(entry)' is not Name@lat,lon,radiusMeters,TimeZone (a known IANA zone)")
            }
            guard !cities.contains(where: { $0.name == name }) else { throw CityCirclesError(description: "\(name) is named twice") }
            cities.append(City(name: name, centre: GeoPoint(lat: lat, lon: lon), radiusMeters: radius, timeZone: zone))
        }
        guard !cities.isEmpty else { throw CityCirclesError(description: "names no city") }
        all = cities
    }

    public func named(_ name: String) -> City? { all.first { $0.name == name } }

    /// The position in `all` of the city whose centre is nearest `point`, inside its circle or not: a city
    /// for every place (matching's cities each dispatch what is nearer them than any other).
    public func nearest(to point: GeoPoint) -> Int {
        var best = 0
        var bestKm = Double.infinity
        for (index, city) in all.enumerated() {
            let km = city.centre.distanceKm(to: point)
            if km < bestKm {
                best = index
                bestKm = km
            }
        }
        return best
    }

    /// The city a point lies in (the nearest centre, when circles overlap); nil outside every city.
    public func city(at point: GeoPoint) -> City? {
        var best: (city: City, meters: Double)? = nil
        for city in all {
            let meters = city.centre.distanceKm(to: point) * 1000
            if meters <= city.radiusMeters, meters < best?.meters ?? .infinity { best = (city, meters) }
        }
        return best?.city
    }
}

/// A city list that cannot be used, and why.
public struct CityCirclesError: Error, Sendable, CustomStringConvertible {
    public let description: String
}
