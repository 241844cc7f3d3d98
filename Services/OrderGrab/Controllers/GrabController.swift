import Contracts
import Foundation
import HailKit
import Hummingbird

/// The order-grab API (`GrabAPI`).
struct GrabController: Sendable {
    let board: GrabBoard
    let audit: GrabAudit
    let clients: ServiceClient
    let credentials: ServiceCredentials

    func register(on router: some RouterMethods<HailRequestContext>) {
        router.on(GrabAPI.open) { body, _, context in
            _ = try context.requireRole(.service, .admin)
            try Self.check(body)
            try await board.open(order: body.orderID, drivers: body.driverIDs, expiresAt: body.expiresAt)
            return NoContent()
        }
        router.on(GrabAPI.openBatch) { body, _, context in
            _ = try context.requireRole(.service, .admin)
            guard (1...500).contains(body.offers.count) else { throw Problem.invalidField("offers", "open 1 to 500 offers") }
            for (index, offer) in body.offers.enumerated() { try Self.check(offer, field: "offers[\(index)].") }
            try await board.open(body.offers)
            return NoContent()
        }
        router.on(GrabAPI.grab) { _, _, context in
            let driver = try context.requireRole(.driver)
            let order = try context.parameters.require("id")
            let outcome = try await board.grab(order: order, driver: driver.userID)
            let now = Date().timeIntervalSince1970
            let final: GrabBoard.Outcome
            do {
                final = outcome == .won ? try await handOver(order: order, driver: driver.userID, context: context) : outcome
            } catch {
                // Won in the race, but the order service gave no judgement: the race was opened again and
                // the driver is answered the error. The attempt is in the audit all the same.
                await record(order: order, driver: driver.userID, outcome: Self.unjudged, at: now, context: context)
                throw error
            }
            await record(order: order, driver: driver.userID, outcome: final.rawValue, at: now, context: context)
            switch final {
            case .won:
                context.logger.debug("order grabbed", metadata: ["order": "\(order)", "driver": "\(driver.userID)"])
                return GrabAPI.Won(orderID: order, driverID: driver.userID, at: now)
            case .taken: throw Problem.conflict("taken", "Another driver already took this order")
            case .notOffered: throw Problem.forbidden("This order was not offered to you")
            case .offerEnded: throw Problem.conflict("offer-ended", "The offer has ended")
            case .orderClosed: throw Problem.conflict("order-closed", "The order was cancelled or expired")
            case .driverBusy: throw Problem.conflict("driver-busy", "You are already on another trip")
            }
        }
        router.on(GrabAPI.withdraw) { body, _, context in
            _ = try context.requireRole(.service, .admin)
            let order = try context.parameters.require("id")
            guard order.count <= 100 else { throw Problem.invalidField("id", "is not an order id") }
            guard (1...100).contains(body.driverIDs.count), body.driverIDs.allSatisfy({ (1...100).contains($0.count) }) else {
                throw Problem.invalidField("driverIDs", "withdraw 1 to 100 drivers")
            }
            try await board.withdraw(order: order, drivers: body.driverIDs)
            return NoContent()
        }
        router.on(GrabAPI.audit) { _, _, context in
            _ = try context.requireRole(.admin, .service)
            let order = try context.parameters.require("id")
            return GrabAPI.Audit(orderID: order, attempts: try await audit.attempts(order: order))
        }
    }

    /// The audit's outcome of a grab that won the race and got no judgement from the order service.
    static let unjudged = "unjudged"

    private func record(order: String, driver: String, outcome: String, at: Double, context: HailRequestContext) async {
        do {
            try await audit.record(order: order, driver: driver, outcome: outcome, at: at)
        } catch {
            context.logger.error("grab not audited", metadata: ["order": "\(order)", "error": "\(error)"])
        }
    }

    /// Refuses an offer that names no order, no driver or more than 100, or has ended already (`field`
    /// prefixes the fields' names in the problem).
    static func check(_ offer: GrabAPI.OpenOffer, field: String = "") throws {
        guard !offer.orderID.isEmpty, offer.orderID.count <= 100 else { throw Problem.invalidField(field + "orderID", "is not an order id") }
        guard (1...100).contains(offer.driverIDs.count) else { throw Problem.invalidField(field + "driverIDs", "offer to 1 to 100 drivers") }
        guard Bounds.isEpochSeconds(offer.expiresAt), offer.expiresAt > Date().timeIntervalSince1970 else {
            throw Problem.invalidField(field + "expiresAt", "must be in the future")
        }
    }

    /// Makes the won grab the order's assignment. The order service is the judge: if the order was
    /// cancelled or expired meanwhile the race closes; if this driver is already on another trip, or the
    /// order service gives no judgement, the race opens again and the order goes back to matching, to be
    /// offered again in its next window: the drivers who grabbed while this one's claim was checked were
    /// told it was taken and have let it go. (Without that, the order waited for its offer to lapse, 30 s
    /// by default, with free drivers near.)
    private func handOver(order: String, driver: String, context: HailRequestContext) async throws -> GrabBoard.Outcome {
        do {
            _ = try await clients.call(
                OrderAPI.assign, .init(driverID: driver, via: "grab"), parameters: ["id": order],
                headers: try await credentials.headers(for: OrderAPI.service),
                shard: try clients.shard(of: OrderAPI.service, id: order), context: context.callContext)
            return .won
        } catch let problem as Problem where problem.status == .conflict && problem.slug == "driver-busy" {
            try await board.reopen(order: order, winner: driver)
            await redispatch(order, context: context)
            return .driverBusy
        } catch let problem as Problem where problem.status == .conflict || problem.status == .notFound {
            try await board.close(order: order, winner: driver)
            return .orderClosed
        } catch {
            // The order service did not judge (down, overloaded, out of time, or its answer was lost): the
            // race opens again and the order goes back to dispatch, as for a busy winner, and the driver
            // gets the error (a 503 or 504, to repeat). Left won, the race told every other driver "taken"
            // for as long as a winner is remembered, whatever became of the order. The order service stays
            // the judge: if the assignment did stand, anyone else's grab is refused there, and this
            // driver's repeated grab is the same assignment again. Run as a task of its own: when the
            // request ran out of time, its own task is being cancelled, and this must still happen.
            await Task {
                do {
                    try await board.reopen(order: order, winner: driver)
                } catch let reopening {
                    context.logger.error("won race not reopened", metadata: ["order": "\(order)", "error": "\(reopening)"])
                }
                await redispatch(order, context: context)
            }.value
            throw error
        }
    }

    /// Sends an offered order back to matching for its next window (`MatchingAPI.redispatch`), with the
    /// request's id and trace but not its deadline, which may be what has just run out.
    private func redispatch(_ order: String, context: HailRequestContext) async {
        let call = CallContext(requestID: context.callContext.requestID, trace: context.callContext.trace)
        do {
            // Matching split by city: the city holding the order takes it back; the others have nothing to do.
            _ = try await clients.callEveryShard(
                MatchingAPI.redispatch, NoContent(), parameters: ["id": order],
                headers: try await credentials.headers(for: MatchingAPI.service), context: call)
        } catch {
            // The offer still lapses and is made again then; nothing is lost but time.
            context.logger.warning("offered order not sent back to dispatch", metadata: ["order": "\(order)", "error": "\(error)"])
        }
    }
}
