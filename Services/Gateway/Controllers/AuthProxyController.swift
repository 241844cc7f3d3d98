import Contracts
import HailKit
import Hummingbird

/// `/api/v1/auth/**`: the public face of the login service, called through the kit's
/// ServiceClient (discovery, balancing, deadlines, retries, breakers).
struct AuthProxyController: Sendable {
    let clients: ServiceClient
    /// Signed-out tokens, told at once of a sign-out through this instance.
    let revocations: Revocations
    /// Failed sign-ins per client address (login counts them per phone number).
    let failures: FailureThrottle

    /// Routes anyone may call.
    func registerPublic(on group: RouterGroup<HailRequestContext>) {
        // A sign-up for a taken phone says so (there is no SMS step to say it to the phone's owner only);
        // such answers count as failures of the client's address, so sign-up probes numbers no faster than
        // sign-in does.
        group.post("signup") { request, context in
            let body = try await JSONBody.decode(LoginAPI.SignUpRequest.self, from: request, context: context)
            let address = context.clientAddress ?? "unknown"
            try await failures.check(address)
            do {
                let user = try await clients.call(LoginAPI.signUp, body, context: context.callContext)
                return try JSONBody.response(user, status: .created)
            } catch let problem as Problem where problem.slug == "phone-taken" {
                try await failures.failed(address)
                throw problem
            }
        }
        group.post("login") { request, context in
            let body = try await JSONBody.decode(LoginAPI.SignInRequest.self, from: request, context: context)
            let address = context.clientAddress ?? "unknown"
            try await failures.check(address)
            do {
                return try JSONBody.response(try await clients.call(LoginAPI.signIn, body, context: context.callContext))
            } catch let problem as Problem where problem.status == .unauthorized {
                try await failures.failed(address)
                throw problem
            }
        }
        group.post("refresh") { request, context in
            let body = try await JSONBody.decode(LoginAPI.RefreshRequest.self, from: request, context: context)
            return try JSONBody.response(try await clients.call(LoginAPI.refresh, body, context: context.callContext))
        }
    }

    /// Routes for signed-in accounts (the group authenticates).
    func registerSecured(on group: RouterGroup<HailRequestContext>) {
        group.post("auth/logout") { request, context in
            let identity = try context.requireIdentity()
            struct Body: Decodable { var refreshToken: String? }
            let buffer = try await request.body.collect(upTo: context.maxUploadSize)
            var refreshToken: String? = nil
            if buffer.readableBytes > 0 {
                refreshToken = try JSONBody.decode(Body.self, from: buffer).refreshToken
            }
            let accessToken = request.headers[.authorization].map { String($0.dropFirst("Bearer ".count)) }
            _ = try await clients.call(
                LoginAPI.logout, LoginAPI.LogoutRequest(refreshToken: refreshToken, accessToken: accessToken),
                context: context.callContext)
            // Refused here at once; the other instances hear of it from login.
            revocations.revoke(tokenID: identity.tokenID, sessionID: identity.sessionID)
            context.logger.info("signed out", metadata: ["user": "\(identity.userID)"])
            return Response(status: .noContent)
        }
    }
}
