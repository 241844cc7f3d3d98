import Contracts
import Foundation
import HailKit
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOWebSocket
import RedisKit

/// What the WebSocket router learned about a connection before upgrading it.
struct PushSocketContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    /// Who opens the socket, or the problem that refuses it (set by `PushSocketController.admit`).
    var admission: Result<Identity, Problem>?

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.admission = nil
    }
}

/// `GET /ws`: the WebSocket where riders and drivers receive their pushes.
///
/// Browsers cannot set an Authorization header on a WebSocket, and a token in a URL ends up in access
/// logs and browser history, so a page first asks `POST /api/v1/ws/ticket` (with its access token) for a
/// ticket that opens one socket within a minute (`GET /ws?ticket=…`); other clients may send their
/// access token in the Authorization header instead. A page of another web origin than the gateway's
/// own (or `gateway.ws.origins`) is refused, so another site cannot open a socket with a visitor's
/// ticket.
///
/// A refusal needs a status a browser can read: a failed handshake shows a page nothing, so the socket is
/// accepted and closed at once with code 4401 (not signed in) or 4403 (origin refused) and the problem
/// as the reason, before anything else is sent. Without an Upgrade header, `/ws` answers the same problem
/// over HTTP.
///
/// The socket first says `{"type":"hello"}`, then carries one JSON `PushMessage` per text frame. It is
/// closed (4401, "session-ended") when its session is signed out or its refresh token reused.
struct PushSocketController: Sendable {
    /// The same check as every `/api/v1` route, deny-list included.
    let authentication: AuthenticationMiddleware
    let hub: PushHub
    let subscriptions: PushSubscriptions
    let tickets: PushTickets
    /// Allowed web origins; empty: the gateway's own.
    let origins: Set<String>

    /// The router the WebSocket upgrade consults.
    func webSocketRouter() -> Router<PushSocketContext> {
        let router = Router(context: PushSocketContext.self)
        router.ws("/ws") { request, context in
            // Every well-formed upgrade is accepted; a refusal is told through the close code (above).
            .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            let admission = await admit(context.request, logger: context.logger)
            let identity: Identity
            switch admission {
            case .failure(let problem):
                try await outbound.close(.unknown(problem.status == .forbidden ? 4403 : 4401), reason: Self.reason(problem))
                return
            case .success(let admitted):
                identity = admitted
            }
            let (id, pushes) = hub.connect(user: identity.userID, session: identity.sessionID, token: identity.tokenID)
            // The user's channel is subscribed before the hello: a push published after it is not missed.
            await subscriptions.join(identity.userID)
            defer {
                hub.disconnect(user: identity.userID, id: id)
                let user = identity.userID
                Task { await subscriptions.leave(user) }
            }
            try await outbound.write(.text(#"{"type":"hello","userID":"\#(identity.userID)","role":"\#(identity.role.rawValue)"}"#))
            let ended = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    for await push in pushes { try await outbound.write(.text(push)) }
                    // The hub finished the stream: the session ended (a disconnect ends the group first).
                    return true
                }
                group.addTask {
                    // The client says nothing we need; reading lets its close (and pings) through.
                    for try await _ in inbound {}
                    return false
                }
                let first = try await group.next() ?? false
                group.cancelAll()
                return first
            }
            if ended {
                try? await outbound.close(.unknown(4401), reason: #"{"status":401,"type":"urn:hailstorm:problem:session-ended"}"#)
            }
        }
        return router
    }

    /// `POST /api/v1/ws/ticket` for signed-in accounts, and what a plain HTTP request to `/ws` gets.
    func register(on router: Router<HailRequestContext>, secured: RouterGroup<HailRequestContext>) {
        secured.post("ws/ticket") { request, context -> Response in
            _ = try context.requireIdentity()
            let token = String((request.headers[.authorization] ?? "").dropFirst("Bearer ".count))
            let ticket = try await tickets.issue(for: token)
            return try JSONBody.response(PushTicket(ticket: ticket, expiresIn: Int(tickets.lifetime.components.seconds)), status: .created)
        }
        router.get("/ws") { request, context -> Response in
            _ = try admitted(await admit(request, logger: context.logger))
            throw Problem(
                .badRequest, slug: "websocket-required", title: "This endpoint speaks WebSocket",
                detail: "Open a WebSocket (Upgrade: websocket) to /ws?ticket=<ticket from POST /api/v1/ws/ticket>")
        }
    }

    private func admitted(_ admission: Result<Identity, Problem>) throws -> Identity {
        try admission.get()
    }

    /// The origin check, then the ticket (or Authorization header).
    func admit(_ request: Request, logger: Logger) async -> Result<Identity, Problem> {
        if let origin = request.headers[.origin], !originAllowed(origin, host: request.head.authority) {
            return .failure(Problem.forbidden("Pages of \(origin) cannot open this gateway's WebSocket"))
        }
        do {
            if let ticket = request.uri.queryParameters.get("ticket"), !ticket.isEmpty {
                return .success(try await tickets.redeem(ticket, authentication: authentication, logger: logger))
            }
            if let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") {
                return .success(try await authentication.identity(token: String(header.dropFirst(7)), logger: logger))
            }
            return .failure(Problem.unauthorized("Open /ws?ticket=<ticket>: POST /api/v1/ws/ticket with your access token gives one"))
        } catch let problem as Problem {
            return .failure(problem)
        } catch {
            logger.error("WebSocket admission failed", metadata: ["error": "\(error)"])
            return .failure(Problem.unavailable("Sessions cannot be checked right now", retryAfterSeconds: 1))
        }
    }

    /// An `Origin` is allowed when it is listed, or (with no list) when it names the host the request
    /// was sent to (its name; scheme and port aside, so a page served through a proxy port still
    /// matches). A page of another site names its own host and is refused.
    func originAllowed(_ origin: String, host: String?) -> Bool {
        if !origins.isEmpty { return origins.contains(origin) }
        guard let host, let originHost = URL(string: origin)?.host, let requestHost = URL(string: "http://" + host)?.host else {
            return false
        }
        return originHost.lowercased() == requestHost.lowercased()
    }

    /// A problem short enough for a close frame's reason (at most 123 bytes).
    static func reason(_ problem: Problem) -> String {
        #"{"status":\#(problem.status.code),"type":"urn:hailstorm:problem:\#(problem.slug)"}"#
    }
}

/// The answer to `POST /api/v1/ws/ticket`.
struct PushTicket: Codable, Sendable {
    var ticket: String
    var expiresIn: Int
}

/// One-use tickets that open a WebSocket, kept in Redis (so any gateway instance can redeem one another
/// issued) for `lifetime`. A ticket carries the access token it was issued for: redeeming it checks that
/// token again (expiry, deny-list), so a ticket outlives nothing its token would not.
struct PushTickets: Sendable {
    let redis: RedisClient
    let keyPrefix: String
    let lifetime: Duration

    /// A ticket for the (already verified) access token.
    func issue(for accessToken: String) async throws -> String {
        let ticket = RandomID.hex(40)
        try await redis.set("\(keyPrefix):\(ticket)", to: accessToken, expiresIn: lifetime)
        return ticket
    }

    func redeem(_ ticket: String, authentication: AuthenticationMiddleware, logger: Logger) async throws -> Identity {
        guard ticket.count <= 100,
            let token = try await redis.send(RedisCommand("GETDEL", "\(keyPrefix):\(ticket)")).string, !token.isEmpty
        else {
            throw Problem(
                .unauthorized, slug: "invalid-ticket", title: "The WebSocket ticket is not valid",
                detail: "The ticket is unknown, used or expired; ask POST /api/v1/ws/ticket for another")
        }
        return try await authentication.identity(token: token, logger: logger)
    }
}
