import Contracts
import Foundation
import HailKit
import Hummingbird
import Metrics

/// Drivers' locations and availability (`MatchingAPI`). A driver speaks only for itself; services and
/// admins for anyone (a fleet simulator, an operator taking a driver offline).
struct DriverController: Sendable {
    let fleet: DriverFleet
    let store: DispatchStore
    let counters: DispatchCounters
    let style: DispatchStyle
    let fixStream: FixStream?
    let dispatch: DispatchService
    /// Where this instance dispatches (matching split by city: its own city only).
    var city = CityRange.everywhere

    func register(on router: some RouterMethods<HailRequestContext>) {
        router.on(MatchingAPI.locations) { body, _, context in
            try await accept(body.points, from: try driver(context))
        }
        router.on(MatchingAPI.locationBatch) { body, _, context in
            _ = try context.requireRole(.service)
            guard (1...MatchingAPI.locationBatchLimit).contains(body.drivers.count) else {
                throw Problem.invalidField("drivers", "send 1 to \(MatchingAPI.locationBatchLimit) drivers")
            }
            var results: [MatchingAPI.LocationBatchResult.Outcome] = []
            results.reserveCapacity(body.drivers.count)
            for entry in body.drivers {
                do {
                    guard Self.isDriverID(entry.driverID) else { throw Problem.invalidField("id", "is not a driver id") }
                    let accepted = try await accept(entry.points, from: entry.driverID)
                    results.append(.init(status: 200, accepted: accepted.accepted))
                } catch let problem as Problem {
                    results.append(.init(status: problem.status.code, problem: problem.document(requestID: nil)))
                }
            }
            return MatchingAPI.LocationBatchResult(results: results)
        }
        router.on(MatchingAPI.online) { body, _, context in
            let driver = try driver(context)
            if let lat = body.lat, let lon = body.lon {
                let point = GeoPoint(lat: lat, lon: lon)
                guard point.isValid else { throw Problem.invalidField("lat", "needs lat in -90…90 and lon in -180…180") }
                guard city.owns(point) else { throw city.misdirected(point) }
                try await fleet.locate(driver, at: point)
            } else if body.lat != nil || body.lon != nil {
                throw Problem.invalidField(body.lat == nil ? "lat" : "lon", "send both lat and lon, or neither")
            } else if !fleet.hasPosition(driver) {
                throw Problem.conflict("no-position", "Send your location (lat and lon) to go online", field: "lat")
            }
            if fleet.isSuspended(driver) {
                throw Problem.conflict("driver-suspended", "An operator suspended this account from dispatch; contact support")
            }
            try await fleet.goOnline(driver)
            if let lat = body.lat, let lon = body.lon {
                fixStream?.add(LocationEvents.Fix(driverID: driver, lat: lat, lon: lon, at: Date().timeIntervalSince1970, state: "available"))
            }
            context.logger.info("driver online", metadata: ["driver": "\(driver)"])
            return fleet.status(driver)
        }
        router.on(MatchingAPI.offline) { _, _, context in
            let driver = try driver(context)
            try await fleet.goOffline(driver)
            context.logger.info("driver offline", metadata: ["driver": "\(driver)"])
            return fleet.status(driver)
        }
        router.on(MatchingAPI.driver) { _, _, context in
            fleet.status(try driver(context))
        }
        router.on(MatchingAPI.drivers) { _, _, context in
            _ = try context.requireRole(.admin, .service)
            return MatchingAPI.DriverList(drivers: fleet.onlineDrivers())
        }
        router.on(MatchingAPI.suspend) { _, _, context in
            _ = try context.requireRole(.admin)
            let driver = try driver(context)
            let changed = try await fleet.setSuspended(true, driver)
            // Withdrawn also when already suspended: a retry after a failed withdrawal finishes it.
            let withdrawn = try await dispatch.withdrawOffers(from: driver, context: context.callContext)
            if changed || !withdrawn.isEmpty {
                context.logger.notice("driver suspended", metadata: ["driver": "\(driver)", "offersWithdrawn": "\(withdrawn.count)"])
            }
            return fleet.status(driver)
        }
        router.on(MatchingAPI.restore) { _, _, context in
            _ = try context.requireRole(.admin)
            let driver = try driver(context)
            if try await fleet.setSuspended(false, driver) {
                context.logger.notice("driver restored", metadata: ["driver": "\(driver)"])
            }
            return fleet.status(driver)
        }
        router.on(MatchingAPI.waiting) { _, request, context in
            _ = try context.requireRole(.admin, .service)
            let limit = try request.uri.queryParameters.get("limit").map { text -> Int in
                guard let value = Int(text), (1...5000).contains(value) else {
                    throw Problem.invalidField("limit", "must be a whole number from 1 to 5000")
                }
                return value
            } ?? 500
            return try await store.waitingOrders(limit: limit)
        }
        router.on(MatchingAPI.redispatch) { _, _, context in
            _ = try context.requireRole(.service, .admin)
            let order = try context.parameters.require("id")
            guard (1...100).contains(order.count) else { throw Problem.invalidField("id", "is not an order id") }
            if try await store.redispatch(order) {
                Counter(label: "hailstorm_dispatch_offers_reopened_total").increment()
                context.logger.info("offered order back to dispatch", metadata: ["order": "\(order)"])
            }
            return NoContent()
        }
        router.on(MatchingAPI.stats) { _, _, context in
            _ = try context.requireRole(.admin, .service)
            let counts = fleet.counts
            let done = counters.snapshot()
            return MatchingAPI.DispatchStats(
                mode: style.rawValue, driversKnown: counts.known, driversAvailable: counts.available,
                ordersWaiting: try await store.waitingCount, windows: done.windows, assigned: done.assigned,
                offered: done.offered, deferred: done.deferred, meanPickupKm: done.meanPickupKm)
        }
    }

    /// Takes a driver's fixes (`MatchingAPI.locations`, one entry of `locationBatch`): the latest moves the
    /// driver in the index, and every one goes to `driver.location`.
    private func accept(_ points: [MatchingAPI.LocationPoint], from driver: String) async throws -> MatchingAPI.LocationsAccepted {
        guard (1...1000).contains(points.count) else {
            throw Problem.invalidField("points", "send 1 to 1000 points")
        }
        for (i, point) in points.enumerated() {
            guard GeoPoint(lat: point.lat, lon: point.lon).isValid else {
                throw Problem.invalidField("points[\(i)]", "needs lat in -90…90 and lon in -180…180")
            }
            if let at = point.at, !Bounds.isEpochSeconds(at) {
                throw Problem.invalidField("points[\(i)].at", "must be a time in seconds since 1970, before 2100")
            }
        }
        // The latest fix counts; without times, the last one sent. Another city's place is that city's
        // instance's to take (a driver who drove there is dispatched there from now on).
        let latest = MatchingAPI.latest(points)!
        let position = GeoPoint(lat: latest.lat, lon: latest.lon)
        guard city.owns(position) else { throw city.misdirected(position) }
        try await fleet.locate(driver, at: position)
        if let fixStream {
            let now = Date().timeIntervalSince1970
            let state = fleet.status(driver).state
            fixStream.add(points.map {
                LocationEvents.Fix(driverID: driver, lat: $0.lat, lon: $0.lon, at: $0.at ?? now, state: state)
            })
        }
        return MatchingAPI.LocationsAccepted(accepted: points.count)
    }

    static func isDriverID(_ id: String) -> Bool { !id.isEmpty && id.count <= 100 }

    /// The driver a request is about: the path's id, which must be the caller unless an admin or a service calls.
    private func driver(_ context: HailRequestContext) throws -> String {
        let identity = try context.requireRole(.driver, .admin, .service)
        let id = try context.parameters.require("id")
        guard Self.isDriverID(id) else { throw Problem.invalidField("id", "is not a driver id") }
        if identity.role == .driver, identity.userID != id {
            throw Problem.forbidden("A driver can only report and change its own status")
        }
        return id
    }
}
