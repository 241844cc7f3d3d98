import Foundation
import HailKit
import Logging
import ServiceLifecycle

/// Settles payments whose request died with its process (a crash between writing the payment and
/// writing the provider's answer): it asks the provider what became of each charge, by the payment's id,
/// and writes that — the ledger if the money moved, a failure (and the coupon back) if it did not.
/// Runs as `PeriodicWork` ("payment-recovery").
struct PaymentRecoveryService {
    let desk: PaymentDesk
    /// A payment `processing` for this long has lost its request; far longer than any charge takes.
    let after: Duration
    let logger: Logger

    func periodic(every interval: Duration) -> PeriodicWork {
        PeriodicWork("payment-recovery", every: interval, logger: logger) { try await sweep() }
    }

    func sweep() async throws {
        let cutoff = Date().timeIntervalSince1970 - Double(after.components.seconds)
        for payment in try await desk.store.stuck(before: cutoff) {
            let outcome = try await desk.provider.lookup(reference: payment.id)
                ?? .declined(reason: "interrupted before the provider was asked; nothing was charged")
            logger.notice("recovering an interrupted payment", metadata: ["payment": "\(payment.id)", "outcome": "\(outcome)"])
            do {
                try await desk.finish(payment.id, outcome, coupon: payment.couponID, orderID: payment.orderID)
            } catch let problem as Problem where problem.slug == "payment-declined" {
                // Recorded as failed; nobody is waiting for the answer.
            }
        }
    }
}
