import Configuration
import Contracts
import EventBus
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// Builds the login service from configuration.
///
/// Keys beyond the kit's: `auth.signing.key` (secret; login's private key, the only one that signs users'
/// tokens; its public key must be in `auth.jwks` under a kid `login:<version>`), `auth.access.ttl.seconds`
/// (900), `auth.refresh.ttl.seconds` (30 days), `auth.bcrypt.cost` (10; at least 10 in production),
/// `auth.signin.failures` (failed sign-ins per phone, 5) per `auth.signin.window.seconds` (60) before
/// 429, and `auth.admin.phone` + `auth.admin.password` (secret) to create the admin account at start when
/// it does not exist.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "login", reader: reader, defaultPort: 9001)
    let tokens = try await kit.accessTokens()
    guard tokens.issuer == AccessTokens.userIssuer else {
        throw ConfigurationError(
            "login signs users' tokens and needs auth.signing.key whose public key is in auth.jwks as login:<version>")
    }
    let bcryptCost = try reader.int(forKey: "auth.bcrypt.cost", default: 10, in: 4...16)
    if kit.configuration.mode == .production, bcryptCost < 10 {
        throw ConfigurationError("auth.bcrypt.cost must be at least 10 in production mode, not \(bcryptCost)")
    }
    let database = try await SQLiteStore.open(
        configuration: SQLiteConfiguration(path: kit.configuration.sqlitePath),
        migrations: UserStore.migrations,
        logger: kit.logger)
    let wakeups = OutboxWakeups()
    let accounts = Accounts(
        store: UserStore(db: database, service: kit.name),
        redis: kit.redis,
        tokens: tokens,
        accessTTL: .seconds(try reader.int(forKey: "auth.access.ttl.seconds", default: 900, in: 10...86_400)),
        refreshTTL: .seconds(try reader.int(forKey: "auth.refresh.ttl.seconds", default: 30 * 24 * 3600, in: 60...(365 * 24 * 3600))),
        bcryptCost: UInt8(bcryptCost),
        decoyHash: Accounts.decoyHash(cost: UInt8(bcryptCost)),
        throttle: FailureThrottle(
            redis: kit.redis, keyPrefix: reader.string(forKey: "auth.signin.prefix", default: "login:failed"),
            limit: try reader.int(forKey: "auth.signin.failures", default: 5, in: 1...1_000_000),
            window: .seconds(try reader.int(forKey: "auth.signin.window.seconds", default: 60, in: 1...86_400)),
            subject: "for this phone number"),
        wakeups: wakeups,
        logger: kit.logger)

    if let phone = reader.string(forKey: "auth.admin.phone"),
        let password = reader.string(forKey: "auth.admin.password", isSecret: true)
    {
        if try await accounts.store.user(phone: try Accounts.normalizedPhone(phone)) == nil {
            _ = try await accounts.createAccount(role: .admin, phone: phone, password: password, name: "Administrator")
        }
    }

    kit.addReadinessCheck("sqlite") { try await database.ping() }
    kit.relayOutbox(of: database, wakeups: wakeups)
    kit.trimStreams([UserEvents.SignedUp.stream])
    kit.onShutdown { try await database.close() }

    let router = kit.makeRouter()
    let controller = AuthController(accounts: accounts)
    controller.register(on: router)
    controller.registerAuthenticated(on: try kit.authenticated(router, tokens: tokens))
    return kit.makeApplication(router: router)
}
