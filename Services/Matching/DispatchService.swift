import Contracts
import Foundation
import Hummingbird
import HailKit
import Logging
import MatchingEngine
import Metrics
import ServiceLifecycle
import Synchronization

/// How matching hands out orders.
enum DispatchStyle: String, Sendable {
    /// Each window's orders are assigned to drivers by the engine's min-cost assignment.
    case assign
    /// Each order is offered to its k nearest available drivers, who race to grab it (order-grab).
    case offer
}

struct DispatchSettings: Sendable {
    var style: DispatchStyle
    var window: Duration
    /// The engine's mode for `assign` (`exact` or `fast`) and its pickup radius.
    var engine: DispatchConfiguration
    /// `offer`: drivers each order is offered to.
    var offerDrivers: Int
    /// `offer`: how long the drivers have to grab.
    var offerSeconds: Double
    /// Orders one window takes at most (the oldest first); the rest wait for the next.
    var maxOrdersPerWindow: Int
}

/// What dispatch has done since start, for `/v1/stats` (the same figures go to `/metrics`).
final class DispatchCounters: Sendable {
    private struct Values {
        var windows = 0, assigned = 0, offered = 0, deferred = 0
        var pickupKm = 0.0
    }
    private let values = Mutex(Values())

    func window(assigned: Int, offered: Int, deferred: Int, pickupKm: Double) {
        values.withLock {
            $0.windows += 1
            $0.assigned += assigned
            $0.offered += offered
            $0.deferred += deferred
            $0.pickupKm += pickupKm
        }
    }

    func snapshot() -> (windows: Int, assigned: Int, offered: Int, deferred: Int, meanPickupKm: Double?) {
        values.withLock { ($0.windows, $0.assigned, $0.offered, $0.deferred, $0.assigned > 0 ? $0.pickupKm / Double($0.assigned) : nil) }
    }
}

/// The dispatch loop: every window, the orders waiting (from `DispatchStore`) are matched to the
/// available drivers (from `DriverFleet`) and handed to the order service, which owns the order's state:
/// an assignment it refuses (the order was cancelled, the driver took another order by a grab) is undone
/// here and the order waits for the next window or leaves dispatch.
struct DispatchService: Service {
    let settings: DispatchSettings
    let store: DispatchStore
    let fleet: DriverFleet
    let clients: ServiceClient
    let credentials: ServiceCredentials
    let claims: DispatchClaims
    let counters: DispatchCounters
    let logger: Logger

    /// A window every `settings.window` (from start to start) as `PeriodicWork` ("dispatch-window"): drivers
    /// without a recent fix go offline, then the window runs. A failed window is retried after at most
    /// four windows.
    func run() async throws {
        try await PeriodicWork("dispatch-window", every: settings.window, maxBackoff: settings.window * 4, logger: logger) {
            let stale = try await fleet.sweepStale()
            if !stale.isEmpty {
                logger.info("drivers without a recent fix taken offline", metadata: ["drivers": "\(stale.count)"])
            }
            try await window()
        }.run()
    }

    /// A suspended driver's standing offers are taken back: from this file (an order nobody else was
    /// offered waits for the next window) and from order-grab's race, so the driver cannot grab them.
    /// Returns the orders withdrawn.
    func withdrawOffers(from driver: String, context: CallContext) async throws -> [String] {
        let orders = try await store.withdrawAllOffers(to: driver)
        guard !orders.isEmpty else { return [] }
        let headers = try await credentials.headers(for: GrabAPI.service)
        for order in orders {
            _ = try await clients.call(
                GrabAPI.withdraw, .init(driverIDs: [driver]), parameters: ["id": order], headers: headers, context: context)
        }
        return orders
    }

    /// An order left dispatch (assigned, cancelled, completed): its claim on a driver is dropped.
    func release(order: String) {
        _ = claims.release(order: OrderID(Self.number(order)))
    }

    /// One window: the oldest waiting orders, each dispatched the way its rider asked or, when it did not
    /// say, in the configured style. Assignments go first, so drivers the solver gives an order are not
    /// also offered another in the same window.
    func window() async throws {
        let waiting = try await store.waiting(
            limit: settings.maxOrdersPerWindow, offerLapsedBefore: Date().timeIntervalSince1970 - settings.offerSeconds)
        guard !waiting.isEmpty else { return }
        let byStyle = Dictionary(grouping: waiting) { order in
            order.dispatch.map { $0 == .offer ? DispatchStyle.offer : .assign } ?? settings.style
        }
        if let toAssign = byStyle[.assign] { try await assign(toAssign) }
        if let toOffer = byStyle[.offer] { try await offer(toOffer) }
    }

    private func assign(_ waiting: [DispatchStore.Waiting]) async throws {
        var byNumber: [OrderID: DispatchStore.Waiting] = [:]
        let orders = waiting.map { order in
            let id = OrderID(Self.number(order.orderID))
            byNumber[id] = order
            return DispatchOrder(id: id, pickup: fleet.projection.project(DriverFleet.coordinate(order.pickup)))
        }
        let snapshot = fleet.live.snapshot()
        guard snapshot.count > 0 else {
            counters.window(assigned: 0, offered: 0, deferred: orders.count, pickupKm: 0)
            Counter(label: "hailstorm_dispatch_deferred_total").increment(by: orders.count)
            return
        }
        let clock = ContinuousClock()
        var result: DispatchResult!
        let solveTime = clock.measure { result = Dispatcher(configuration: settings.engine).dispatch(orders, drivers: snapshot) }
        Timer(label: "hailstorm_dispatch_solve_seconds").recordNanoseconds(solveTime.nanosecondsValue)
        Recorder(label: "hailstorm_dispatch_window_orders").record(orders.count)
        let outcomes = fleet.live.commit(result.assignments, claims: claims)
        let claimed = zip(result.assignments, outcomes).filter { $0.1 == .claimed }.map(\.0)
        let headers = try await credentials.headers(for: OrderAPI.service)

        // The window's assignments go to order in calls of up to `handOverBatch` (one transaction each
        // there, instead of a call and a commit per assignment); the bookkeeping of the confirmed ones here
        // runs side by side, so this service's writes share commits too.
        var handOvers: [(assignment: Assignment, order: String, driver: String)] = []
        for assignment in claimed {
            guard let order = byNumber[assignment.order], let driver = fleet.account(of: assignment.driver) else { continue }
            handOvers.append((assignment, order.orderID, driver))
        }
        var confirmed: [Assignment] = []
        // A split order service gets each shard's orders from the instance owning them.
        for (shard, owned) in clients.groupedByShard(handOvers, of: OrderAPI.service, id: \.order) {
            var start = 0
            while start < owned.count {
                let chunk = Array(owned[start..<min(start + Self.handOverBatch, owned.count)])
                start += chunk.count
                let outcomes = await handOver(chunk.map { ($0.order, $0.driver, $0.assignment.pickupKm) }, headers: headers, shard: shard)
                for (item, ok) in zip(chunk, outcomes) {
                    if ok {
                        confirmed.append(item.assignment)
                    } else {
                        _ = claims.release(order: item.assignment.order)
                        fleet.release(item.assignment.driver)
                    }
                }
            }
        }
        let pickupKm = confirmed.reduce(0) { $0 + $1.pickupKm }
        counters.window(assigned: confirmed.count, offered: 0, deferred: result.deferred.count, pickupKm: pickupKm)
        Counter(label: "hailstorm_dispatch_assigned_total").increment(by: confirmed.count)
        Counter(label: "hailstorm_dispatch_deferred_total").increment(by: result.deferred.count)
        if !confirmed.isEmpty {
            Recorder(label: "hailstorm_dispatch_pickup_km").record(pickupKm / Double(confirmed.count))
        }
        logger.info(
            "window dispatched",
            metadata: [
                "orders": "\(orders.count)", "drivers": "\(snapshot.count)", "assigned": "\(confirmed.count)",
                "deferred": "\(result.deferred.count)", "solve_ms": "\(solveTime.millisecondsValue)",
            ])
    }

    /// Asks the order service to give each order to its driver, in one call; for each, true when it did.
    /// A refusal because of the order (cancelled, expired, already taken) takes the order out of dispatch;
    /// a driver who won a grab meanwhile (`driver-busy`) is marked busy by that assignment's event. When
    /// the call itself fails, nothing is confirmed and the orders wait for the next window (the batch is
    /// safe to repeat).
    private func handOver(_ items: [(order: String, driver: String, pickupKm: Double)], headers: HTTPFields, shard: Int?) async -> [Bool] {
        let results: [OrderAPI.AssignmentResults.Result]
        do {
            results = try await clients.call(
                OrderAPI.assignBatch,
                .init(assignments: items.map { .init(orderID: $0.order, driverID: $0.driver, via: "dispatch", pickupKm: $0.pickupKm) }),
                headers: headers, shard: shard, context: .none
            ).results
        } catch {
            logger.warning("assignments not confirmed; the orders wait", metadata: ["orders": "\(items.count)", "error": "\(error)"])
            return items.map { _ in false }
        }
        let byOrder = Dictionary(results.map { ($0.orderID, $0) }, uniquingKeysWith: { first, _ in first })
        return await withTaskGroup(of: (Int, Bool).self) { group in
            for (index, item) in items.enumerated() {
                guard let result = byOrder[item.order] else { continue }
                group.addTask { (index, await settle(result, order: item.order, driver: item.driver, pickupKm: item.pickupKm)) }
            }
            var outcomes = items.map { _ in false }
            for await (index, ok) in group { outcomes[index] = ok }
            return outcomes
        }
    }

    /// Books one answered assignment here; true when it stands.
    private func settle(_ result: OrderAPI.AssignmentResults.Result, order: String, driver: String, pickupKm: Double) async -> Bool {
        guard result.assigned else {
            if result.problem != "driver-busy", result.status == 409 || result.status == 404 {
                logger.info("order left dispatch", metadata: ["order": "\(order)", "reason": "\(result.detail ?? result.problem ?? "refused")"])
                try? await store.done(order)
            }
            return false
        }
        do {
            // Busy now, not when the event comes back: a fix the driver sends meanwhile must not make it
            // available to the next window.
            try await store.done(order, mode: "assign", drivers: [driver], pickupKm: pickupKm)
            try await fleet.markBusy(driver, order: order)
            // Cancelled in the moment between (its event handled first): the driver is free after all.
            if try await store.hasEnded(order) { try await fleet.markFree(driver, order: order) }
            return true
        } catch {
            logger.warning("assignment not booked; the order waits", metadata: ["order": "\(order)", "error": "\(error)"])
            return false
        }
    }

    private func offer(_ waiting: [DispatchStore.Waiting]) async throws {
        let headers = try await credentials.headers(for: OrderAPI.service)
        let grabHeaders = try await credentials.headers(for: GrabAPI.service)
        var deferred = 0
        var offers: [(DispatchStore.Waiting, [String])] = []
        // An order offered before goes to the nearest drivers not offered it yet; only when every driver
        // in reach was, to them again (the order service tells none of them twice, so it lapses again).
        let before = try await store.offeredBefore(waiting.map(\.orderID))
        for order in waiting {
            let pickup = fleet.projection.project(DriverFleet.coordinate(order.pickup))
            let past = before[order.orderID] ?? []
            let near = fleet.live.nearest(to: pickup, k: settings.offerDrivers + past.count)
                .filter { $0.distanceKm <= settings.engine.maxPickupKm }
                .compactMap { fleet.account(of: $0.driver) }
            let fresh = near.filter { !past.contains($0) }
            let drivers = Array((fresh.isEmpty ? near : fresh).prefix(settings.offerDrivers))
            if drivers.isEmpty { deferred += 1 } else { offers.append((order, drivers)) }
        }
        // A window's offers go out in calls of up to `handOverBatch`: one to order-grab opening their
        // races, one to order marking them offered, instead of two calls per order.
        var offered = 0
        for (shard, owned) in clients.groupedByShard(offers, of: OrderAPI.service, id: \.0.orderID) {
            var start = 0
            while start < owned.count {
                let chunk = Array(owned[start..<min(start + Self.handOverBatch, owned.count)])
                start += chunk.count
                offered += await makeOffers(chunk, headers: headers, grabHeaders: grabHeaders, shard: shard)
            }
        }
        counters.window(assigned: 0, offered: offered, deferred: deferred, pickupKm: 0)
        Counter(label: "hailstorm_dispatch_offered_total").increment(by: offered)
        Counter(label: "hailstorm_dispatch_deferred_total").increment(by: deferred)
        Recorder(label: "hailstorm_dispatch_window_orders").record(waiting.count)
    }

    /// Assignments or offers per call to order (its batch endpoints take up to 500).
    static let handOverBatch = 250

    /// Opens the races in order-grab, then marks the orders offered (which pushes them to the drivers):
    /// in that order, so no driver hears of an offer it cannot grab yet. Returns how many offers stand.
    /// An order the order service refuses (cancelled, expired, taken meanwhile) leaves dispatch; when a
    /// call fails, the orders wait for the next window (both calls are safe to repeat).
    private func makeOffers(
        _ offers: [(DispatchStore.Waiting, [String])], headers: HTTPFields, grabHeaders: HTTPFields, shard: Int?
    ) async -> Int {
        let expiresAt = Date().timeIntervalSince1970 + settings.offerSeconds
        let results: [OrderAPI.OfferResults.Result]
        do {
            _ = try await clients.call(
                GrabAPI.openBatch,
                .init(offers: offers.map { .init(orderID: $0.0.orderID, driverIDs: $0.1, expiresAt: expiresAt) }),
                headers: grabHeaders, context: .none)
            results = try await clients.call(
                OrderAPI.offerBatch, .init(offers: offers.map { .init(orderID: $0.0.orderID, driverIDs: $0.1) }),
                headers: headers, shard: shard, context: .none
            ).results
        } catch {
            logger.warning("offers not made; the orders wait", metadata: ["orders": "\(offers.count)", "error": "\(error)"])
            return 0
        }
        let byOrder = Dictionary(results.map { ($0.orderID, $0) }, uniquingKeysWith: { first, _ in first })
        // Booked here side by side, so this service's writes share commits.
        return await withTaskGroup(of: Bool.self) { group in
            for (order, drivers) in offers {
                guard let result = byOrder[order.orderID] else { continue }
                group.addTask {
                    if result.offered {
                        do {
                            try await store.offered(order.orderID, drivers: drivers)
                            return true
                        } catch {
                            logger.warning("offer not booked; the order waits", metadata: ["order": "\(order.orderID)", "error": "\(error)"])
                            return false
                        }
                    }
                    if result.status == 409 || result.status == 404 {
                        logger.info("order left dispatch", metadata: ["order": "\(order.orderID)", "reason": "\(result.detail ?? result.problem ?? "")"])
                        try? await store.done(order.orderID)
                    } else {
                        logger.warning(
                            "offer not made; the order waits", metadata: ["order": "\(order.orderID)", "status": "\(result.status ?? 0)"])
                    }
                    return false
                }
            }
            var made = 0
            for await stands in group where stands { made += 1 }
            return made
        }
    }

    /// The engine's number of an order: a stable hash of its id (FNV-1a), so a window and the events
    /// that later release its claims agree without a shared table.
    static func number(_ order: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in order.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return hash
    }
}
