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
    /// `sqlite.durability`: `normal` (a commit does not wait for the disk; a power loss can lose the last
    /// whole transactions, a crash of the process nothing) or `full` (every commit synced); the default
    /// is the service's own (`normal`, `full` for the money services). `sqlite.cache.kib`: the pages each
    /// connection keeps in memory (the service's own default; SQLite's 2 MiB when it has none).
    public mutating func openDatabase(
        migrations: SQLiteMigrations, durability defaultDurability: SQLiteConfiguration.Durability = .normal, cacheKiB: Int? = nil
    ) async throws -> SQLiteStore {
        let durabilityName = reader.string(forKey: "sqlite.durability", default: defaultDurability.rawValue)
        guard let durability = SQLiteConfiguration.Durability(rawValue: durabilityName) else {
            throw ConfigurationError("sqlite.durability must be normal or full, not \(durabilityName)")
        }
        let cache = try reader.int(forKey: "sqlite.cache.kib", default: cacheKiB ?? 0, in: 0...16_777_216)
        let database = try await SQLiteStore.open(
            configuration: SQLiteConfiguration(path: configuration.sqlitePath, durability: durability, cacheKiB: cache > 0 ? cache : nil),
            migrations: migrations, logger: logger)
        addReadinessCheck("sqlite") { try await database.ping() }
        onShutdown { try await database.close() }
        return database
    }

    /// The routes of a service behind the gateway: every request must carry a valid access token (the
    /// gateway forwards the caller's) that was not signed out. `auth.denylist.check` (true) can turn the
    /// signed-out check off for a service only the gateway can reach, which made it already. The deny-list
    /// is kept in the process by a `RevocationListener`, so the check costs no Redis round trip.
    public mutating func authenticated(_ router: Router<HailRequestContext>, tokens: AccessTokens) throws -> RouterGroup<HailRequestContext> {
        let checkDenyList = try reader.flag(forKey: "auth.denylist.check", default: true)
        var revocations: Revocations? = nil
        if checkDenyList {
            let kept = Revocations()
            addService(RevocationListener(redis: redis, revocations: kept, logger: logger))
            revocations = kept
        }
        return router.group().add(middleware: AuthenticationMiddleware(
            tokens: tokens, redis: redis, checkDenyList: checkDenyList, revocations: revocations))
    }
}
