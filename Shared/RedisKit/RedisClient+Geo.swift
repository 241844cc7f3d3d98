/// A member found by a GEO search, with its distance from the centre.
public struct GeoMatch: Sendable, Hashable {
    public var member: String
    public var distanceKm: Double
    public var longitude: Double
    public var latitude: Double
}

extension RedisClient {
    /// `GEOADD key lon lat member`; returns how many members were new.
    @discardableResult
    public func geoadd(_ key: String, longitude: Double, latitude: Double, member: String) async throws -> Int {
        try await send(RedisCommand("GEOADD", key, longitude, latitude, member)).int ?? 0
    }

    /// Members within `radiusKm` of a point, nearest first.
    public func geosearch(
        _ key: String,
        longitude: Double,
        latitude: Double,
        radiusKm: Double,
        count: Int? = nil
    ) async throws -> [GeoMatch] {
        var arguments: [any RESPArgumentConvertible] = [
            key, "FROMLONLAT", longitude, latitude, "BYRADIUS", radiusKm, "km", "ASC",
        ]
        if let count { arguments += ["COUNT", count] }
        arguments += ["WITHCOORD", "WITHDIST"]
        guard let rows = try await send(RedisCommand("GEOSEARCH", arguments)).array else {
            throw RedisError.unexpectedReply("GEOSEARCH reply is not an array")
        }
        return rows.compactMap { row in
            guard let f = row.array, f.count == 3, let member = f[0].string, let distance = f[1].double,
                let coordinates = f[2].array, coordinates.count == 2,
                let lon = coordinates[0].double, let lat = coordinates[1].double
            else { return nil }
            return GeoMatch(member: member, distanceKm: distance, longitude: lon, latitude: lat)
        }
    }

    /// The position of `member`, or nil when it is not in the set.
    public func geopos(_ key: String, member: String) async throws -> (longitude: Double, latitude: Double)? {
        guard let rows = try await send(RedisCommand("GEOPOS", key, member)).array,
            let pair = rows.first?.array, pair.count == 2,
            let lon = pair[0].double, let lat = pair[1].double
        else { return nil }
        return (lon, lat)
    }
}
