import Contracts
import Foundation
import HailKit

/// The token keys of a test run: a private key for every service (and for `login`, the only issuer of
/// users' tokens) and the JWKS of them all, made once per test process, as `hailstorm up` makes a run's.
public enum TestKeys {
    public static let issuers = [
        "login", "gateway", "order", "matching", "order-grab", "coupon", "payment", "settlement", "command", "test-service",
    ]

    public static let shared: (privateKeys: [String: String], jwks: String) = {
        do {
            return try TokenKeys.generate(issuers: issuers)
        } catch {
            fatalError("cannot make test keys: \(error)")
        }
    }()

    public static var jwks: String { shared.jwks }

    /// The JWKS in a file, for processes started with `--auth-jwks-file` (a command-line value with commas
    /// would be read as a list).
    public static let jwksFile: String = {
        do {
            let path = try TestEnvironment.temporaryDirectory("keys") + "/jwks.json"
            try jwks.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        } catch {
            fatalError("cannot write the test JWKS: \(error)")
        }
    }()

    public static func privateKey(_ issuer: String) -> String? { shared.privateKeys[issuer] }

    /// A signer with `issuer`'s key that verifies as `service`: `tokens(as: "login")` signs users' tokens
    /// the way login does.
    public static func tokens(as issuer: String = AccessTokens.userIssuer, service: String = "test") async throws -> AccessTokens {
        try await AccessTokens(service: service, signingKey: privateKey(issuer), jwks: jwks, cacheSize: 0)
    }

    /// A user's access token, signed as login signs them.
    public static func userToken(
        _ userID: String, role: Role, lifetime: TimeInterval = 3600, session: String? = nil
    ) async throws -> String {
        let now = Date()
        return try await tokens().sign(AccessTokenClaims(
            userID: userID, role: role, tokenID: UUID().uuidString, issuedAt: now, expiresAt: now + lifetime, sessionID: session))
    }
}
