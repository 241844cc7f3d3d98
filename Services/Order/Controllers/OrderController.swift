import Contracts
import EventBus
import Foundation
import HailKit
import Hummingbird
import Logging

/// The order service's HTTP API (`OrderAPI`). Every route verifies the token the gateway forwarded and
/// checks the caller's part in the order here, where the order is.
struct OrderController: Sendable {
    let store: OrderStore
    let cache: OrderCache
    let fares: FareRules
    let surge: SurgeTable
    let wakeups: OutboxWakeups
    let quotes: QuoteTally
    /// The shard of the orders this instance owns: its new orders' ids name it.
    let shard: Shard

    func register(on router: some RouterMethods<HailRequestContext>) {
        router.on(OrderAPI.quote) { body, _, context in
            let caller = try context.requireRole(.rider, .admin)
            let quote = try fares.quote(body, surge: try await surge.factor(at: body.pickup))
            quotes.add(QuoteEvents.Quote(
                riderID: caller.userID, lat: body.pickup.lat, lon: body.pickup.lon, at: Date().timeIntervalSince1970, surge: quote.surge))
            return quote
        }
        router.on(OrderAPI.create) { body, request, context in
            let rider = try context.requireRole(.rider)
            let key = try HailHeaders.idempotencyKey(in: request.headers)
            let quote = try fares.quote(body.route, surge: try await surge.factor(at: body.pickup))
            let now = Date().timeIntervalSince1970
            let candidate = OrderAPI.Order(
                id: shard.id(RandomID.timeOrderedUUID()), riderID: rider.userID, driverID: nil, state: .created,
                pickup: body.pickup, dropoff: body.dropoff, distanceKm: quote.distanceKm, fareCents: quote.fareCents,
                surge: quote.surge, currency: quote.currency, createdAt: now, updatedAt: now, history: [], dispatch: body.dispatch)
            let (order, created) = try await store.create(candidate, idempotencyKey: key)
            if created {
                wakeups.notify()
                context.logger.info("order created", metadata: ["order": "\(order.id)", "fare": "\(order.fareCents)"])
            }
            return order
        }
        router.on(OrderAPI.order) { _, _, context in
            let identity = try context.requireIdentity()
            let id = try context.parameters.require("id")
            let order = try await load(id)
            if try await !mayRead(order, identity) { throw Problem.forbidden("Order \(id) is not yours") }
            return order
        }
        router.on(OrderAPI.list) { _, request, context in
            let identity = try context.requireRole(.rider, .driver)
            let limit = try request.uri.queryParameters.get("limit").map { text -> Int in
                guard let value = Int(text), (1...100).contains(value) else {
                    throw Problem.invalidField("limit", "must be a whole number from 1 to 100")
                }
                return value
            } ?? OrderAPI.OrderPage.defaultLimit
            let cursor = try request.uri.queryParameters.get("cursor").map { try OrderCursor(parsing: $0) }
            return try await store.orders(of: identity.userID, asDriver: identity.role == .driver, after: cursor, limit: limit)
        }
        router.on(OrderAPI.cancel) { body, _, context in
            let identity = try context.requireRole(.rider, .driver, .admin)
            let reason = body.reason.trimmingCharacters(in: .whitespacesAndNewlines)
            guard (1...500).contains(reason.count) else { throw Problem.invalidField("reason", "must be 1 to 500 characters") }
            return try await move(context, .init(to: .cancelled, actor: identity.userID, reason: reason) { order in
                switch identity.role {
                case .admin, .service: return
                case .rider where order.riderID == identity.userID: return
                case .driver where order.driverID == identity.userID: return
                default: throw Problem.forbidden("Only the order's rider or its driver can cancel it")
                }
            })
        }
        for (endpoint, state) in [(OrderAPI.arrive, OrderState.arriving), (OrderAPI.start, .inTrip), (OrderAPI.complete, .completed)] {
            router.on(endpoint) { _, _, context in
                let driver = try context.requireRole(.driver)
                return try await move(context, .init(to: state, actor: driver.userID) { order in
                    guard order.driverID == driver.userID else {
                        throw Problem.forbidden("Only the driver assigned to this order moves its trip")
                    }
                })
            }
        }
        router.on(OrderAPI.offer) { body, _, context in
            let caller = try context.requireRole(.service, .admin)
            guard !body.driverIDs.isEmpty, body.driverIDs.count <= 100 else {
                throw Problem.invalidField("driverIDs", "offer an order to 1 to 100 drivers")
            }
            return try await move(
                context, .init(to: .offered, actor: caller.userID, reason: "offered to \(body.driverIDs.count) drivers", offeredTo: body.driverIDs))
        }
        router.on(OrderAPI.offerBatch) { body, _, context in
            let caller = try context.requireRole(.service, .admin)
            guard (1...500).contains(body.offers.count) else { throw Problem.invalidField("offers", "send 1 to 500 offers") }
            for (index, item) in body.offers.enumerated() {
                guard !item.orderID.isEmpty else { throw Problem.invalidField("offers[\(index)].orderID", "must name an order") }
                guard (1...100).contains(item.driverIDs.count) else {
                    throw Problem.invalidField("offers[\(index)].driverIDs", "offer an order to 1 to 100 drivers")
                }
            }
            let outcomes = try await moveAll(
                body.offers.map {
                    ($0.orderID, OrderStore.Move(
                        to: .offered, actor: caller.userID, reason: "offered to \($0.driverIDs.count) drivers", offeredTo: $0.driverIDs))
                }, logger: context.logger)
            let results = zip(body.offers, outcomes).map { item, outcome -> OrderAPI.OfferResults.Result in
                switch outcome {
                case .success: .init(orderID: item.orderID, offered: true)
                case .failure(let problem):
                    .init(orderID: item.orderID, offered: false, status: problem.status.code, problem: problem.slug, detail: problem.detail ?? problem.title)
                }
            }
            return OrderAPI.OfferResults(results: results)
        }
        router.on(OrderAPI.assign) { body, _, context in
            let caller = try context.requireRole(.service, .admin)
            let assignment = try Self.assignment(driverID: body.driverID, via: body.via, pickupKm: body.pickupKm, by: caller.userID)
            return try await move(context, assignment)
        }
        router.on(OrderAPI.assignBatch) { body, _, context in
            let caller = try context.requireRole(.service, .admin)
            guard (1...500).contains(body.assignments.count) else {
                throw Problem.invalidField("assignments", "send 1 to 500 assignments")
            }
            let moves = try body.assignments.enumerated().map { index, item in
                guard !item.orderID.isEmpty else { throw Problem.invalidField("assignments[\(index)].orderID", "must name an order") }
                return try Self.assignment(
                    driverID: item.driverID, via: item.via, pickupKm: item.pickupKm, by: caller.userID, field: "assignments[\(index)].")
            }
            let outcomes = try await moveAll(zip(body.assignments, moves).map { ($0.orderID, $1) }, logger: context.logger)
            let results = zip(body.assignments, outcomes).map { item, outcome -> OrderAPI.AssignmentResults.Result in
                switch outcome {
                case .success(let order):
                    .init(orderID: item.orderID, assigned: order.state == .assigned && order.driverID == item.driverID)
                case .failure(let problem):
                    .init(orderID: item.orderID, assigned: false, status: problem.status.code, problem: problem.slug, detail: problem.detail ?? problem.title)
                }
            }
            return OrderAPI.AssignmentResults(results: results)
        }
        router.on(OrderAPI.setSurge) { body, _, context in
            _ = try context.requireRole(.admin)
            guard body.at.isValid else { throw Problem.invalidField("at", "needs lat in -90…90 and lon in -180…180") }
            guard body.factor.isFinite, (1...10).contains(body.factor) else {
                throw Problem.invalidField("factor", "must be from 1 to 10")
            }
            let (cell, previous) = try await surge.set(body.factor, at: body.at)
            context.logger.info("surge set", metadata: ["cell": "\(cell)", "factor": "\(body.factor)", "previous": "\(previous)"])
            return OrderAPI.SurgeSetting(at: body.at, factor: body.factor, cell: cell, previous: previous)
        }
        router.on(OrderAPI.surgeMap) { _, _, context in
            _ = try context.requireRole(.admin, .service)
            return try await surge.map()
        }
    }

    /// Riders see their orders, drivers the orders they drive or were offered, admins and services all.
    private func mayRead(_ order: OrderAPI.Order, _ identity: Identity) async throws -> Bool {
        switch identity.role {
        case .admin, .service: return true
        case .rider: return order.riderID == identity.userID
        case .driver:
            if order.driverID == identity.userID { return true }
            return try await store.wasOffered(order.id, to: identity.userID)
        }
    }

    private func load(_ id: String) async throws -> OrderAPI.Order {
        if let cached = await cache.get(id) { return cached }
        guard let order = try await store.order(id: id) else { throw Problem.notFound("No order \(id)") }
        await cache.put(order)
        return order
    }

    /// An assignment as a move, its fields checked (`field` prefixes their names in a problem); its reason
    /// says how the driver was found and how far the pickup is.
    private static func assignment(
        driverID: String, via: String, pickupKm: Double?, by actor: String, field: String = ""
    ) throws -> OrderStore.Move {
        guard !driverID.isEmpty else { throw Problem.invalidField(field + "driverID", "must name a driver") }
        guard ["dispatch", "grab"].contains(via) else { throw Problem.invalidField(field + "via", "must be dispatch or grab") }
        if let pickupKm, !(0...20_000).contains(pickupKm) {
            throw Problem.invalidField(field + "pickupKm", "must be from 0 to 20000")
        }
        let reason = pickupKm.map { "\(via), pickup \(String(format: "%.2f", $0)) km" } ?? via
        return .init(to: .assigned, actor: actor, reason: reason, driverID: driverID)
    }

    /// A batch's moves side by side (the store's group commit gives them one transaction, each in its own
    /// savepoint); for each, in order, the order it left or the problem below 500 that refused it alone.
    private func moveAll(_ moves: [(id: String, move: OrderStore.Move)], logger: Logger) async throws -> [Result<OrderAPI.Order, Problem>] {
        try await withThrowingTaskGroup(of: (Int, Result<OrderAPI.Order, Problem>).self) { group in
            for (index, item) in moves.enumerated() {
                group.addTask {
                    do {
                        return (index, .success(try await move(item.id, item.move, logger: logger)))
                    } catch let problem as Problem where problem.status.code < 500 {
                        return (index, .failure(problem))
                    }
                }
            }
            var outcomes = [Result<OrderAPI.Order, Problem>?](repeating: nil, count: moves.count)
            for try await (index, outcome) in group { outcomes[index] = outcome }
            return outcomes.compactMap { $0 }
        }
    }

    private func move(_ context: HailRequestContext, _ move: OrderStore.Move) async throws -> OrderAPI.Order {
        try await self.move(try context.parameters.require("id"), move, logger: context.logger)
    }

    private func move(_ id: String, _ move: OrderStore.Move, logger: Logger) async throws -> OrderAPI.Order {
        let (order, moved) = try await store.move(id, move, now: Date().timeIntervalSince1970)
        guard moved else { return order }
        wakeups.notify()
        do {
            try await cache.invalidate(id)
        } catch {
            logger.warning("order cache not invalidated; it expires on its own", metadata: ["order": "\(id)", "error": "\(error)"])
        }
        // Every move is on the order stream and in the order's history; the log line is for debugging.
        logger.debug("order moved", metadata: ["order": "\(id)", "state": "\(order.state.rawValue)", "by": "\(move.actor)"])
        return order
    }
}
