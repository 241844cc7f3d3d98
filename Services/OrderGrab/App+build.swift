import Configuration
import Contracts
import Foundation
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// Builds the order-grab service from configuration.
///
/// Keys beyond the kit's: `auth.jwt.secret` (secret), `auth.denylist.check` (false), `grab.redis.prefix`
/// (`grab`), `grab.memory.seconds` (how long a winner is remembered, 86400).
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "order-grab", reader: reader, defaultPort: 9004)
    let tokens = await AccessTokens(signingKey: try AccessTokens.signingKey(from: kit.configuration, reader: reader))
    let database = try await SQLiteStore.open(
        configuration: SQLiteConfiguration(path: kit.configuration.sqlitePath), migrations: GrabAudit.migrations,
        logger: kit.logger)
    let board = GrabBoard(
        redis: kit.redis, prefix: reader.string(forKey: "grab.redis.prefix", default: "grab"),
        memory: .seconds(max(60, reader.int(forKey: "grab.memory.seconds", default: 86_400))))
    kit.addReadinessCheck("sqlite") { try await database.ping() }
    kit.onShutdown { try await database.close() }

    let router = kit.makeRouter()
    let api = router.group()
        .add(middleware: AuthenticationMiddleware(
            tokens: tokens, redis: kit.redis, checkDenyList: reader.bool(forKey: "auth.denylist.check", default: false)))
    GrabController(
        board: board, audit: GrabAudit(db: database), clients: kit.clients,
        credentials: ServiceCredentials(tokens: tokens, service: kit.name)
    ).register(on: api)
    return kit.makeApplication(router: router)
}
