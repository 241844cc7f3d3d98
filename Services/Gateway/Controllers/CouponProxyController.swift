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
            return try await clients.forward(CouponAPI.campaigns, request, context)
        }
        api.get("coupons/campaigns/{id}") { request, context in
            _ = try context.requireIdentity()
            return try await clients.forward(CouponAPI.campaign, request, context, parameters: ["id": try context.parameters.require("id")])
        }
        api.post("coupons/campaigns/{id}/claim") { request, context in
            _ = try context.requireRole(.rider)
            return try await clients.forward(CouponAPI.claim, request, context, parameters: ["id": try context.parameters.require("id")])
        }
        api.get("coupons/wallet") { request, context in
            _ = try context.requireRole(.rider)
            return try await clients.forward(CouponAPI.wallet, request, context)
        }
        api.post("admin/coupons/campaigns") { request, context in
            _ = try context.requireRole(.admin)
            return try await clients.forward(CouponAPI.createCampaign, request, context)
        }
        api.get("admin/coupons/campaigns/{id}/audit") { request, context in
            _ = try context.requireRole(.admin)
            return try await clients.forward(CouponAPI.audit, request, context, parameters: ["id": try context.parameters.require("id")])
        }
    }
}
