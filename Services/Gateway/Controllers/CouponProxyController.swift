import Contracts
import HailKit
import Hummingbird

/// `/api/v1/coupons/**` and `/api/v1/admin/coupons/**`: the coupon service behind the gateway. Roles are
/// checked here, at the edge, and again by the service, which verifies the forwarded token itself.
struct CouponProxyController: Sendable {
    let clients: ServiceClient

    /// Routes for signed-in accounts (the group authenticates).
    func register(on api: RouterGroup<HailRequestContext>) {
        api.get("coupons/campaigns") { request, context in
            _ = try context.requireIdentity()
            return try await forward(CouponAPI.campaigns, request, context)
        }
        api.get("coupons/campaigns/{id}") { request, context in
            _ = try context.requireIdentity()
            return try await forward(CouponAPI.campaign, request, context, ["id": try context.parameters.require("id")])
        }
        api.post("coupons/campaigns/{id}/claim") { request, context in
            _ = try context.requireRole(.rider)
            return try await forward(CouponAPI.claim, request, context, ["id": try context.parameters.require("id")])
        }
        api.get("coupons/wallet") { request, context in
            _ = try context.requireRole(.rider)
            return try await forward(CouponAPI.wallet, request, context)
        }
        api.post("admin/coupons/campaigns") { request, context in
            _ = try context.requireRole(.admin)
            let body = try await JSONBody.decode(CouponAPI.NewCampaign.self, from: request, context: context)
            let campaign = try await clients.call(
                CouponAPI.createCampaign, body, headers: passedOn(request), context: context.callContext)
            return try JSONBody.response(campaign, status: .created)
        }
        api.get("admin/coupons/campaigns/{id}/audit") { request, context in
            _ = try context.requireRole(.admin)
            return try await forward(CouponAPI.audit, request, context, ["id": try context.parameters.require("id")])
        }
    }

    /// The caller's token (the service checks it again) and Idempotency-Key.
    private func passedOn(_ request: Request) -> HTTPFields {
        var headers: HTTPFields = [:]
        if let authorization = request.headers[.authorization] { headers[.authorization] = authorization }
        if let key = request.headers[HailHeaders.idempotencyKey] { headers[HailHeaders.idempotencyKey] = key }
        return headers
    }

    private func forward<Res>(
        _ endpoint: Endpoint<NoContent, Res>, _ request: Request, _ context: HailRequestContext,
        _ parameters: [String: String] = [:]
    ) async throws -> Response {
        let answer = try await clients.call(
            endpoint, NoContent(), parameters: parameters, headers: passedOn(request), context: context.callContext)
        return try JSONBody.response(answer, status: endpoint.successStatus)
    }
}
