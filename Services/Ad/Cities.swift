import Contracts
import Foundation
import HailKit
import Synchronization

/// The cities ads are sold in: a name, a circle on the map, and the time zone that hours, days and
/// daily budgets are counted in. From `ad.cities` (`CityCircles`: `Name@lat,lon,radiusMeters,TimeZone`
/// entries separated by `;`, default `Berlin@52.52,13.405,30000,Europe/Berlin`).
struct Cities: Sendable {
    final class City: Sendable {
        let name: String
        let centre: GeoPoint
        let radiusMeters: Double
        let timeZone: TimeZone
        let calendar: Calendar

        /// The day last asked for: every impression counted asks, and the calendar's arithmetic costs a
        /// few microseconds of time zone rules each time.
        private let lastDay = Mutex<(start: Double, end: Double, key: String)?>(nil)

        init(name: String, centre: GeoPoint, radiusMeters: Double, timeZone: TimeZone) {
            self.name = name
            self.centre = centre
            self.radiusMeters = radiusMeters
            self.timeZone = timeZone
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = timeZone
            self.calendar = calendar
        }

        /// The local day that `time` falls in: its start and end (seconds since 1970) and its key
        /// (`20261205`), which names that day's budget and cap counters.
        func day(of time: Double) -> (start: Double, end: Double, key: String) {
            if let last = lastDay.withLock({ $0 }), last.start <= time, time < last.end { return last }
            let day = Self.day(of: time, in: calendar)
            lastDay.withLock { $0 = day }
            return day
        }

        private static func day(of time: Double, in calendar: Calendar) -> (start: Double, end: Double, key: String) {
            let date = Date(timeIntervalSince1970: time)
            let start = calendar.startOfDay(for: date)
            let end = calendar.date(byAdding: .day, value: 1, to: start) ?? start.addingTimeInterval(86_400)
            let parts = calendar.dateComponents([.year, .month, .day], from: date)
            let key = String(format: "%04d%02d%02d", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0)
            return (start.timeIntervalSince1970, end.timeIntervalSince1970, key)
        }

        /// The local hour (0–23) and weekday (1 = Monday … 7 = Sunday) of `time`.
        func clock(at time: Double) -> (hour: Int, weekday: Int) {
            let parts = calendar.dateComponents([.hour, .weekday], from: Date(timeIntervalSince1970: time))
            // Foundation counts Sunday as 1.
            let weekday = ((parts.weekday ?? 1) + 5) % 7 + 1
            return (parts.hour ?? 0, weekday)
        }
    }

    let all: [City]

    /// The circles the cities are (`CityCircles`: the gateway reads the same list to route by place).
    let circles: CityCircles

    static let defaultSpecification = CityCircles.defaultSpecification

    init(specification: String) throws {
        do {
            circles = try CityCircles(specification: specification)
        } catch {
            throw ConfigurationError("ad.cities: \(error.description)")
        }
        all = circles.all.map { City(name: $0.name, centre: $0.centre, radiusMeters: $0.radiusMeters, timeZone: $0.timeZone) }
    }

    func named(_ name: String) -> City? { all.first { $0.name == name } }

    /// The city a point lies in (the nearest centre, when circles overlap).
    func city(at point: GeoPoint) -> City? {
        circles.city(at: point).flatMap { named($0.name) }
    }
}

extension AdAPI.Targeting {
    /// Whether a request at `point`, at `time`, from a user with `completedTrips` (nil: not a rider, or
    /// no campaign asked) matches, in `city`. The segment thresholds are the service's.
    func matches(
        point: GeoPoint, time: Double, in city: Cities.City, completedTrips: Int?, newBelow: Int, frequentFrom: Int
    ) -> Bool {
        guard city.name == self.city else { return false }
        if let area, GeoPoint(lat: area.lat, lon: area.lon).distanceKm(to: point) * 1000 > area.radiusMeters { return false }
        if hours?.isEmpty == false || days?.isEmpty == false {
            let clock = city.clock(at: time)
            if let hours, !hours.isEmpty, !hours.contains(clock.hour) { return false }
            if let days, !days.isEmpty, !days.contains(clock.weekday) { return false }
        }
        switch segment ?? .any {
        case .any: return true
        case .new:
            guard let trips = completedTrips else { return false }
            return trips < newBelow
        case .frequent:
            guard let trips = completedTrips else { return false }
            return trips >= frequentFrom
        }
    }
}
