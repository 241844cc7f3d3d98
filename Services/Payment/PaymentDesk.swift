import Contracts
import EventBus
import Foundation
import HailKit
import HTTPTypes
import Logging
import Metrics

/// Pays a completed ride: the order from the order service, the coupon from the coupon service, the
/// money from the provider, the books in the ledger — in that order, with the payment row written first
/// so that an Idempotency-Key names one payment from its first moment.
///
/// Retries of one key (a rider's app resending after a timeout) never charge twice: within this process
/// they wait for the attempt in flight and get its answer; across instances the row's unique key decides
/// and the others wait for its final state; the provider itself is asked by the payment's id, so even a
/// charge repeated after a crash is answered from its books.
struct PaymentDesk: Sendable {
    let store: PaymentStore
    let provider: any PaymentProvider
    let rules: LedgerRules
    let clients: ServiceClient
    let credentials: ServiceCredentials
    let inFlight: InFlightPayments
    let wakeups: OutboxWakeups
    /// How long a repeat waits for a payment another instance is processing before answering 409.
    let waitLimit: Duration
    let logger: Logger
    /// The shard of the payments this instance keeps (payment split, `shards`): a rider's payments are on
    /// the shard of their id, where the gateway sends them, and their ids name it.
    var shard = Shard(index: 0, of: 1)

    func pay(_ request: PaymentAPI.PayRequest, rider: String, idempotencyKey: String, context: CallContext) async throws -> PaymentAPI.Payment {
        try await inFlight.run(rider + "\u{1}" + idempotencyKey) {
            try await process(request, rider: rider, idempotencyKey: idempotencyKey, context: context)
        }
    }

    private func process(
        _ request: PaymentAPI.PayRequest, rider: String, idempotencyKey: String, context: CallContext
    ) async throws -> PaymentAPI.Payment {
        let headers = try await credentials.headers(for: OrderAPI.service)
        let order = try await clients.call(
            OrderAPI.order, NoContent(), parameters: ["id": request.orderID], headers: headers,
            shard: try clients.shard(of: OrderAPI.service, id: request.orderID), context: context)
        guard order.riderID == rider else { throw Problem.forbidden("Order \(request.orderID) is not yours") }
        let method = request.paymentMethod ?? "sandbox-card"
        let now = Date().timeIntervalSince1970
        let candidate = PaymentAPI.Payment(
            id: shard.id(RandomID.timeOrderedUUID()), orderID: order.id, riderID: rider, driverID: order.driverID ?? "",
            state: .processing, fareCents: order.fareCents, discountCents: 0, amountCents: order.fareCents, commissionCents: 0,
            couponID: request.couponID, currency: order.currency, providerReference: nil, failureReason: nil,
            createdAt: now, updatedAt: now, entries: [])
        // A key seen before answers what it answered, whatever the order's state is now.
        if let payment = try await store.payment(rider: rider, idempotencyKey: idempotencyKey, orderID: order.id) {
            return try await settled(payment)
        }
        switch order.state {
        case .completed: break
        case .paid: throw Problem.conflict("already-paid", "Order \(order.id) is paid")
        default:
            throw Problem.conflict(
                "order-not-payable", "Order \(order.id) is \(order.state.rawValue); only a completed ride can be paid", field: "orderID")
        }
        guard order.driverID != nil else { throw Problem.conflict("order-not-payable", "Order \(order.id) has no driver") }

        switch try await store.begin(candidate, idempotencyKey: idempotencyKey, method: method) {
        case .existing(let payment): return try await settled(payment)
        case .started: break
        }
        let payment = candidate
        var discount = 0
        if let coupon = request.couponID {
            do {
                discount = try await clients.call(
                    CouponAPI.redeem, .init(userID: rider, orderID: order.id, fareCents: order.fareCents, paymentID: payment.id),
                    parameters: ["id": coupon], headers: try await credentials.headers(for: CouponAPI.service),
                    shard: try clients.shard(of: CouponAPI.service, id: coupon), context: context
                ).discountCents
            } catch {
                // Nothing was charged: the payment is forgotten and the key is free for another try.
                try await store.abandon(payment.id)
                if (error as? Problem).map({ $0.status.kind == .clientError }) != true {
                    await giveBack(coupon: coupon, order: order.id, payment: payment.id)
                }
                throw error
            }
        }
        try await store.price(payment.id, discountCents: discount, commissionCents: rules.commission(fareCents: order.fareCents))

        let outcome: ChargeOutcome
        do {
            outcome = try await provider.charge(
                reference: payment.id, amountCents: order.fareCents - discount, currency: order.currency, method: method)
        } catch {
            logger.error("payment provider unreachable; recovery settles the payment", metadata: ["payment": "\(payment.id)", "error": "\(error)"])
            throw Problem.unavailable(
                "The payment provider did not answer; payment \(payment.id) is settled shortly — repeat the request with the same Idempotency-Key",
                retryAfterSeconds: 2)
        }
        return try await finish(payment.id, outcome, coupon: request.couponID, orderID: order.id)
    }

    /// Writes the provider's answer: the ledger on approval; on a decline, the failure and the coupon back.
    @discardableResult
    func finish(_ id: String, _ outcome: ChargeOutcome, coupon: String?, orderID: String) async throws -> PaymentAPI.Payment {
        let now = Date().timeIntervalSince1970
        switch outcome {
        case .approved(let reference):
            let payment = try await store.succeed(id, providerReference: reference, rules: rules, now: now)
            wakeups.notify()
            Counter(label: "hailstorm_payments_total", dimensions: [("outcome", "succeeded")]).increment()
            Counter(label: "hailstorm_payment_charged_cents_total").increment(by: payment.amountCents)
            logger.info("payment succeeded", metadata: ["payment": "\(id)", "order": "\(orderID)", "amount": "\(payment.amountCents)"])
            return payment
        case .declined(let reason):
            let payment = try await store.fail(id, reason: reason, now: now)
            wakeups.notify()
            Counter(label: "hailstorm_payments_total", dimensions: [("outcome", "failed")]).increment()
            if let coupon { await giveBack(coupon: coupon, order: orderID, payment: id) }
            logger.info("payment failed", metadata: ["payment": "\(id)", "order": "\(orderID)", "reason": "\(reason)"])
            throw Self.declined(payment)
        }
    }

    /// The answer a key gets once its payment is final; a payment still processing elsewhere is waited for.
    private func settled(_ payment: PaymentAPI.Payment) async throws -> PaymentAPI.Payment {
        var payment = payment
        let deadline = ContinuousClock.now + waitLimit
        while payment.state == .processing {
            guard ContinuousClock.now < deadline else {
                throw Problem(
                    .conflict, slug: "payment-in-progress", title: "The payment is still being processed",
                    detail: "Payment \(payment.id) is with the provider; repeat the request with the same Idempotency-Key",
                    headers: [.retryAfter: "1"])
            }
            try await Task.sleep(for: .milliseconds(50))
            payment = try await store.payment(id: payment.id) ?? payment
        }
        if payment.state == .failed { throw Self.declined(payment) }
        return payment
    }

    /// Returns the coupon to the wallet. If coupon cannot be reached now, `payment.failed` on the stream
    /// returns it later.
    private func giveBack(coupon: String, order: String, payment: String) async {
        do {
            _ = try await clients.call(
                CouponAPI.release, .init(orderID: order, paymentID: payment), parameters: ["id": coupon], headers: try await credentials.headers(for: CouponAPI.service),
                shard: try clients.shard(of: CouponAPI.service, id: coupon), context: .none)
        } catch {
            logger.warning("coupon not given back now; the payment.failed event does it", metadata: ["coupon": "\(coupon)", "error": "\(error)"])
        }
    }

    static func declined(_ payment: PaymentAPI.Payment) -> Problem {
        Problem(
            HTTPResponse.Status(code: 402, reasonPhrase: "Payment Required"), slug: "payment-declined", title: "The payment was declined",
            detail: "Payment \(payment.id) for order \(payment.orderID) failed: \(payment.failureReason ?? "declined"). "
                + "The ride is unpaid and any coupon is back in the wallet; pay again with a new Idempotency-Key.",
            field: "paymentMethod")
    }
}

/// The payments this process is working on, by rider and Idempotency-Key: a repeat while one is in flight
/// awaits the same work instead of starting another. The work runs in its own task, so a caller that
/// hangs up does not cancel a charge half made.
actor InFlightPayments {
    private var running: [String: Task<PaymentAPI.Payment, any Error>] = [:]

    func run(_ key: String, _ work: @escaping @Sendable () async throws -> PaymentAPI.Payment) async throws -> PaymentAPI.Payment {
        if let task = running[key] { return try await task.value }
        let task = Task { try await work() }
        running[key] = task
        defer { running[key] = nil }
        return try await task.value
    }
}
