import Contracts
import Foundation
import HailKit
import Hummingbird

/// The settlement service's HTTP API (`SettlementAPI`).
struct SettlementController: Sendable {
    let store: SettlementStore
    let clients: ServiceClient
    let credentials: ServiceCredentials
    /// Seconds a completed order may stay unpaid before the report lists it.
    let grace: Double

    func register(on router: some RouterMethods<HailRequestContext>) {
        router.on(SettlementAPI.run) { body, _, context in
            let caller = try context.requireRole(.admin, .service)
            let trigger = body.trigger ?? "api"
            guard ["api", "command", "schedule"].contains(trigger) else {
                throw Problem.invalidField("trigger", "must be api, command or schedule")
            }
            let batch = try await store.runBatch(trigger: trigger, now: Date().timeIntervalSince1970)
            context.logger.info(
                "batch run", metadata: ["batch": "\(batch.id)", "by": "\(caller.userID)", "entries": "\(batch.entries)", "cents": "\(batch.totalCents)"])
            return batch
        }
        router.on(SettlementAPI.batches) { _, request, context in
            _ = try context.requireRole(.admin, .service)
            let limit = try request.uri.queryParameters.get("limit").map { text -> Int in
                guard let value = Int(text), (1...500).contains(value) else {
                    throw Problem.invalidField("limit", "must be a whole number from 1 to 500")
                }
                return value
            } ?? 50
            return SettlementAPI.BatchList(batches: try await store.batches(limit: limit))
        }
        router.on(SettlementAPI.reconciliation) { _, _, context in
            _ = try context.requireRole(.admin, .service)
            // A split payment service: every shard's books, summed.
            let ledger = PaymentAPI.Ledger.merged(try await clients.callEveryShard(
                PaymentAPI.ledger, NoContent(), headers: try await credentials.headers(for: PaymentAPI.service), context: context.callContext))
            return try await store.reconcile(ledger: ledger, grace: grace, now: Date().timeIntervalSince1970)
        }
    }
}
