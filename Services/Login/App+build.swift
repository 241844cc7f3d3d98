import Configuration
import Contracts
import EventBus
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// Builds the login service from configuration.
///
/// Keys beyond the kit's: `auth.jwt.secret` (secret; required in production), `auth.access.ttl.seconds`
/// (900), `auth.refresh.ttl.seconds` (30 days), `auth.bcrypt.cost` (10), and `auth.admin.phone` +
/// `auth.admin.password` (secret) to create the admin account at start when it does not exist.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "login", reader: reader, defaultPort: 9001)
    let signingKey = try AccessTokens.signingKey(from: kit.configuration, reader: reader)
    let database = try await SQLiteStore.open(
        configuration: SQLiteConfiguration(path: kit.configuration.sqlitePath),
        migrations: UserStore.migrations,
        logger: kit.logger)
    let wakeups = OutboxWakeups()
    let accounts = Accounts(
        store: UserStore(db: database, service: kit.name),
        redis: kit.redis,
        tokens: await AccessTokens(signingKey: signingKey),
        accessTTL: .seconds(reader.int(forKey: "auth.access.ttl.seconds", default: 900)),
        refreshTTL: .seconds(reader.int(forKey: "auth.refresh.ttl.seconds", default: 30 * 24 * 3600)),
        bcryptCost: UInt8(clamping: reader.int(forKey: "auth.bcrypt.cost", default: 10)),
        wakeups: wakeups,
        logger: kit.logger)

    if let phone = reader.string(forKey: "auth.admin.phone"),
        let password = reader.string(forKey: "auth.admin.password", isSecret: true)
    {
        if try await accounts.store.user(phone: phone) == nil {
            _ = try await accounts.createAccount(role: .admin, phone: phone, password: password, name: "Administrator")
        }
    }

    kit.addReadinessCheck("sqlite") { try await database.ping() }
    kit.addService(OutboxRelay(store: database, redis: kit.redis, wakeups: wakeups, logger: kit.logger))
    kit.onShutdown { try await database.close() }

    let router = kit.makeRouter()
    AuthController(accounts: accounts).register(on: router)
    return kit.makeApplication(router: router)
}
