import Contracts
import Foundation
import HailKit
import Hummingbird
import HummingbirdWebSocket
import Logging

/// `GET /ws?token=…`: the WebSocket where riders and drivers receive their pushes. Browsers cannot set an
/// Authorization header on a WebSocket, so the access token comes in the query; it is verified (and
/// checked against the deny-list) before the upgrade. The socket first says `{"type":"hello"}`, then
/// carries one JSON `PushMessage` per text frame.
struct PushSocketController: Sendable {
    /// The same check as every `/api/v1` route, deny-list included.
    let authentication: AuthenticationMiddleware
    let hub: PushHub

    /// The router the WebSocket upgrade consults.
    func webSocketRouter() -> Router<BasicWebSocketRequestContext> {
        let router = Router(context: BasicWebSocketRequestContext.self)
        router.ws("/ws") { request, context in
            (try? await identity(request, logger: context.logger)) == nil ? .dontUpgrade : .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            guard let identity = try? await identity(context.request, logger: context.logger) else { return }
            let (id, pushes) = hub.connect(user: identity.userID)
            defer { hub.disconnect(user: identity.userID, id: id) }
            try await outbound.write(.text(#"{"type":"hello","userID":"\#(identity.userID)","role":"\#(identity.role.rawValue)"}"#))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await push in pushes { try await outbound.write(.text(push)) }
                }
                group.addTask {
                    // The client says nothing we need; reading lets its close (and pings) through.
                    for try await _ in inbound {}
                }
                try await group.next()
                group.cancelAll()
            }
        }
        return router
    }

    /// What a plain HTTP request to `/ws` gets: why it was not upgraded.
    func register(on router: Router<HailRequestContext>) {
        router.get("/ws") { request, context -> Response in
            _ = try await identity(request, logger: context.logger)
            throw Problem(
                .badRequest, slug: "websocket-required", title: "This endpoint speaks WebSocket",
                detail: "Open a WebSocket (Upgrade: websocket) to /ws?token=<access token>")
        }
    }

    private func identity(_ request: Request, logger: Logger) async throws -> Identity {
        guard let token = request.uri.queryParameters.get("token"), !token.isEmpty else {
            throw Problem.unauthorized("Pass the access token as ?token=")
        }
        return try await authentication.identity(token: token, logger: logger)
    }
}
