import Contracts
import HailKit
import Hummingbird

/// The money routes: riders paying rides (`/api/v1/payments/**`), and operators' refunds, ledger,
/// settlement batches and reconciliation (`/api/v1/admin/**`). Roles are checked here and again in the
/// payment and settlement services, which verify the forwarded token themselves.
struct MoneyProxyController: Sendable {
    let clients: ServiceClient

    func register(on api: RouterGroup<HailRequestContext>) {
        api.post("payments") { request, context in
            _ = try context.requireRole(.rider)
            return try await clients.forward(PaymentAPI.pay, request, context)
        }
        api.get("payments/{id}") { request, context in
            _ = try context.requireRole(.rider, .driver, .admin)
            return try await clients.forward(PaymentAPI.payment, request, context, parameters: ["id": try context.parameters.require("id")])
        }
        api.post("admin/payments/{id}/refund") { request, context in
            _ = try context.requireRole(.admin)
            return try await clients.forward(PaymentAPI.refund, request, context, parameters: ["id": try context.parameters.require("id")])
        }
        api.get("admin/ledger") { request, context in
            _ = try context.requireRole(.admin)
            var query: [String: String] = [:]
            query["account"] = request.uri.queryParameters.get("account")
            return try await clients.forward(PaymentAPI.ledger, request, context, query: query)
        }
        api.post("admin/settlements/run") { request, context in
            _ = try context.requireRole(.admin)
            // No body needed: the batch pays whatever is owed now.
            let batch = try await clients.call(
                SettlementAPI.run, .init(trigger: "api"), headers: request.forwardedHeaders, context: context.callContext)
            return try JSONBody.response(batch, status: SettlementAPI.run.successStatus)
        }
        api.get("admin/settlements") { request, context in
            _ = try context.requireRole(.admin)
            var query: [String: String] = [:]
            query["limit"] = request.uri.queryParameters.get("limit")
            return try await clients.forward(SettlementAPI.batches, request, context, query: query)
        }
        api.get("admin/reconciliation") { request, context in
            _ = try context.requireRole(.admin)
            return try await clients.forward(SettlementAPI.reconciliation, request, context)
        }
    }
}
