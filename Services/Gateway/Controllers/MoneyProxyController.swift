import Contracts
import HailKit
import Hummingbird

/// The one money route that is more than a relay (`ProxyRoute.all` has the others): an operator running
/// a settlement batch, which needs no body from the caller.
struct MoneyProxyController: Sendable {
    let clients: ServiceClient
    let tokens: AccessTokens

    func register(on api: RouterGroup<HailRequestContext>) {
        api.post("admin/settlements/run") { request, context in
            _ = try context.requireRole(.admin)
            // No body needed: the batch pays whatever is owed now.
            let batch = try await clients.call(
                SettlementAPI.run, .init(trigger: "api"), headers: request.forwardedHeaders(to: SettlementAPI.service, tokens: tokens),
                context: context.callContext)
            return try JSONBody.response(batch, status: SettlementAPI.run.successStatus)
        }
    }
}
