import Configuration
import Hummingbird
import SQLiteKit

extension ServiceKit {
    /// The token verifier (and signer of this service's credentials): `auth.jwks` and `auth.signing.key`,
    /// see `AccessTokens.configured`. `auth.jwt.cache.size`: how many verified tokens it remembers (20,000;
    /// 0 verifies every request afresh) — see `VerifiedTokens`.
    public func accessTokens() async throws -> AccessTokens {
        try await AccessTokens.configured(
            service: name, reader: reader, cacheSize: try reader.int(forKey: "auth.jwt.cache.size", default: 20_000, in: 0...10_000_000))
    }

    /// Opens the service's own SQLite file (`<data.dir>/<service>.sqlite`) and migrates it; `/readyz`
    /// then checks it can be read, and it is closed at shutdown after the server has drained.
    public mutating func openDatabase(migrations: SQLiteMigrations) async throws -> SQLiteStore {
        let database = try await SQLiteStore.open(
            configuration: SQLiteConfiguration(path: configuration.sqlitePath), migrations: migrations, logger: logger)
        addReadinessCheck("sqlite") { try await database.ping() }
        onShutdown { try await database.close() }
        return database
    }

    /// The routes of a service behind the gateway: every request must carry a valid access token (the
    /// gateway forwards the caller's) that was not signed out. `auth.denylist.check` (true) can turn the
    /// signed-out check off for a service only the gateway can reach, which made it already.
    public func authenticated(_ router: Router<HailRequestContext>, tokens: AccessTokens) -> RouterGroup<HailRequestContext> {
        router.group().add(middleware: AuthenticationMiddleware(
            tokens: tokens, redis: redis, checkDenyList: reader.bool(forKey: "auth.denylist.check", default: true)))
    }
}
