import Contracts
import HailKit
import Hummingbird

/// The ride routes: riders' quotes, orders and history (`/api/v1/rides/**`), drivers' availability,
/// locations, grabs and trip moves (`/api/v1/driver/**`), and operators' dispatch views
/// (`/api/v1/admin/**`). Roles are checked here at the edge; each service checks the caller's part in
/// what it owns (a driver sees only its orders) from the token passed on.
struct RideProxyController: Sendable {
    let clients: ServiceClient

    func register(on api: RouterGroup<HailRequestContext>) {
        // Riders.
        api.post("rides/quote") { request, context in
            _ = try context.requireRole(.rider)
            return try await clients.forward(OrderAPI.quote, request, context)
        }
        api.post("rides") { request, context in
            _ = try context.requireRole(.rider)
            return try await clients.forward(OrderAPI.create, request, context)
        }
        api.get("rides") { request, context in
            _ = try context.requireRole(.rider, .driver)
            var query: [String: String] = [:]
            for name in ["cursor", "limit"] { query[name] = request.uri.queryParameters.get(name) }
            return try await clients.forward(OrderAPI.list, request, context, query: query)
        }
        api.get("rides/{id}") { request, context in
            _ = try context.requireRole(.rider, .driver, .admin)
            return try await clients.forward(OrderAPI.order, request, context, parameters: ["id": try context.parameters.require("id")])
        }
        api.post("rides/{id}/cancel") { request, context in
            _ = try context.requireRole(.rider, .driver)
            return try await clients.forward(OrderAPI.cancel, request, context, parameters: ["id": try context.parameters.require("id")])
        }

        // Drivers.
        api.post("driver/online") { request, context in
            let driver = try context.requireRole(.driver)
            return try await clients.forward(MatchingAPI.online, request, context, parameters: ["id": driver.userID])
        }
        api.post("driver/offline") { request, context in
            let driver = try context.requireRole(.driver)
            return try await clients.forward(MatchingAPI.offline, request, context, parameters: ["id": driver.userID])
        }
        api.post("driver/locations") { request, context in
            let driver = try context.requireRole(.driver)
            return try await clients.forward(MatchingAPI.locations, request, context, parameters: ["id": driver.userID])
        }
        api.get("driver/status") { request, context in
            let driver = try context.requireRole(.driver)
            return try await clients.forward(MatchingAPI.driver, request, context, parameters: ["id": driver.userID])
        }
        api.post("driver/offers/{id}/grab") { request, context in
            _ = try context.requireRole(.driver)
            return try await clients.forward(GrabAPI.grab, request, context, parameters: ["id": try context.parameters.require("id")])
        }
        for (verb, endpoint) in [("arrive", OrderAPI.arrive), ("start", OrderAPI.start), ("complete", OrderAPI.complete)] {
            api.post("driver/rides/{id}/\(verb)") { request, context in
                _ = try context.requireRole(.driver)
                return try await clients.forward(endpoint, request, context, parameters: ["id": try context.parameters.require("id")])
            }
        }

        // Operators.
        api.put("admin/surge") { request, context in
            _ = try context.requireRole(.admin)
            return try await clients.forward(OrderAPI.setSurge, request, context)
        }
        api.get("admin/dispatch/stats") { request, context in
            _ = try context.requireRole(.admin)
            return try await clients.forward(MatchingAPI.stats, request, context)
        }
        api.get("admin/grabs/{id}") { request, context in
            _ = try context.requireRole(.admin)
            return try await clients.forward(GrabAPI.audit, request, context, parameters: ["id": try context.parameters.require("id")])
        }
    }
}
