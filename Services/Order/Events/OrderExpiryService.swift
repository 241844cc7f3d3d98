import Contracts
import EventBus
import Foundation
import HailKit
import Logging
import ServiceLifecycle

/// The expiry rule: an order no driver took within `after` becomes `expired` (a history row and an
/// `order.expired` event, like every move). Scans every `interval`; since it only reads the order's own
/// state, an order waiting while matching is down still ends by this rule.
struct OrderExpiryService: Service {
    let store: OrderStore
    let cache: OrderCache
    let wakeups: OutboxWakeups
    let after: Duration
    let interval: Duration
    let logger: Logger

    func run() async throws {
        let seconds = Double(after.components.seconds)
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let now = Date().timeIntervalSince1970
                for id in try await store.waiting(createdBefore: now - seconds, limit: 500) {
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
            } catch {
                logger.warning("expiry scan failed; will retry", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
