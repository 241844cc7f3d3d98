import Contracts
import EventBus
import Foundation
import HailKit
import Hummingbird
import Metrics

/// The payment service's HTTP API (`PaymentAPI`).
struct PaymentController: Sendable {
    let desk: PaymentDesk

    func register(on router: some RouterMethods<HailRequestContext>) {
        router.on(PaymentAPI.pay) { body, request, context in
            let rider = try context.requireRole(.rider)
            guard let key = try HailHeaders.idempotencyKey(in: request.headers) else {
                throw Problem.invalidField("Idempotency-Key", "a payment needs an Idempotency-Key header, so that a retry cannot charge twice")
            }
            guard (1...100).contains(body.orderID.count) else { throw Problem.invalidField("orderID", "must name an order") }
            if let coupon = body.couponID, !(1...100).contains(coupon.count) {
                throw Problem.invalidField("couponID", "must be a coupon id from the wallet")
            }
            if let method = body.paymentMethod, !(1...100).contains(method.count) {
                throw Problem.invalidField("paymentMethod", "must be 1 to 100 characters")
            }
            var call = context.callContext
            call.idempotencyKey = nil
            return try await desk.pay(body, rider: rider.userID, idempotencyKey: key, context: call)
        }
        router.on(PaymentAPI.payment) { _, _, context in
            let identity = try context.requireIdentity()
            let id = try context.parameters.require("id")
            guard let payment = try await desk.store.payment(id: id) else { throw Problem.notFound("No payment \(id)") }
            switch identity.role {
            case .admin, .service: break
            case .rider where payment.riderID == identity.userID: break
            case .driver where payment.driverID == identity.userID: break
            default: throw Problem.forbidden("Payment \(id) is not yours")
            }
            return payment
        }
        router.on(PaymentAPI.refund) { body, _, context in
            let admin = try context.requireRole(.admin)
            let id = try context.parameters.require("id")
            let reason = body.reason.trimmingCharacters(in: .whitespacesAndNewlines)
            guard (1...500).contains(reason.count) else { throw Problem.invalidField("reason", "must be 1 to 500 characters") }
            guard let payment = try await desk.store.payment(id: id) else { throw Problem.notFound("No payment \(id)") }
            guard payment.state == .succeeded else {
                if payment.state == .refunded { return payment }
                throw Problem.conflict("not-refundable", "Payment \(id) is \(payment.state.rawValue); only a succeeded payment can be refunded")
            }
            // The money goes back first; the ledger then says so. A refund repeated after a failure here is
            // answered by the provider from its books.
            try await desk.provider.refund(reference: id)
            let refunded = try await desk.store.refund(id, reason: reason, rules: desk.rules, now: Date().timeIntervalSince1970)
            desk.wakeups.notify()
            Counter(label: "hailstorm_payment_refunds_total").increment()
            context.logger.info("payment refunded", metadata: ["payment": "\(id)", "by": "\(admin.userID)"])
            return refunded
        }
        router.on(PaymentAPI.ledger) { _, request, context in
            _ = try context.requireRole(.admin, .service)
            return try await desk.store.ledger(account: request.uri.queryParameters.get("account"))
        }
    }
}
