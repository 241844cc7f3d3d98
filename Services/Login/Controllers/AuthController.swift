import Contracts
import HailKit
import Hummingbird

/// The login service's HTTP API (`LoginAPI`).
struct AuthController: Sendable {
    let accounts: Accounts

    func register(on router: Router<HailRequestContext>) {
        router.on(LoginAPI.signUp) { body, _, _ in
            try await accounts.signUp(body)
        }
        router.on(LoginAPI.signIn) { body, _, _ in
            try await accounts.signIn(body)
        }
        router.on(LoginAPI.refresh) { body, _, _ in
            try await accounts.refresh(body)
        }
        router.on(LoginAPI.logout) { body, _, _ in
            try await accounts.logout(body)
            return NoContent()
        }
    }

    /// Routes that need a token: an account's own record, for itself, an admin, or a service.
    func registerAuthenticated(on router: RouterGroup<HailRequestContext>) {
        router.on(LoginAPI.user) { _, _, context in
            let identity = try context.requireIdentity()
            let id = try context.parameters.require("id")
            guard identity.userID == id || identity.role == .admin || identity.role == .service else {
                throw Problem.forbidden("An account's record is its own")
            }
            guard let user = try await accounts.store.user(id: id) else {
                throw Problem.notFound("No user \(id)")
            }
            return user
        }
    }
}
