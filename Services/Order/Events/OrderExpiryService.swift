import Contracts
import EventBus
import Foundation
import HailKit
import Logging
import ServiceLifecycle

/// The expiry rule: an order no driver took within `after` becomes `expired` (a history row and an
/// `order.expired` event, like every move). Scans every `interval`; since it only reads the order's own
/// state, an order waiting while matching is down still ends by this rule. Runs as `PeriodicWork`
/// ("order-expiry").
struct OrderExpiryService {
    let store: OrderStore
    let cache: OrderCache
    let wakeups: OutboxWakeups
    let after: Duration
    let logger: Logger
    /// Orders expired per run at most; a full page runs again at once.
    static let page = 500

    func periodic(every interval: Duration) -> PeriodicWork {
        PeriodicWork("order-expiry", every: interval, logger: logger) { try await expireDue() }
    }

    /// Expires the orders past their time; `.more` when a full page was due.
    func expireDue() async throws -> PeriodicWork.Outcome {
        let seconds = Double(after.components.seconds)
        let now = Date().timeIntervalSince1970
        let due = try await store.waiting(createdBefore: now - seconds, limit: Self.page)
        for id in due {
            do {
                let (_, moved) = try await store.move(
                    id, .init(to: .expired, actor: "order", reason: "no driver within \(Int(seconds)) s"), now: now)
                if moved {
                    wakeups.notify()
                    try? await cache.invalidate(id)
                    logger.info("order expired", metadata: ["order": "\(id)"])
                }
            } catch let problem as Problem where problem.status == .conflict {
                // Taken or cancelled between the scan and the move: nothing to expire.
            }
        }
        return due.count == Self.page ? .more : .done
    }
}
