import Configuration
import Contracts
import Foundation
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// Builds the order-grab service from configuration.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys), `auth.denylist.check` (true), `grab.redis.prefix`
/// (`grab`), `grab.memory.seconds` (how long a winner is remembered, 86400).
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "order-grab", reader: reader, defaultPort: 9004)
    let tokens = try await kit.accessTokens()
    let database = try await kit.openDatabase(migrations: GrabAudit.migrations)
    let board = GrabBoard(
        redis: kit.redis, prefix: reader.string(forKey: "grab.redis.prefix", default: "grab"),
        memory: .seconds(max(60, try reader.int(forKey: "grab.memory.seconds", default: 86_400, in: 60...2_592_000))))

    let router = kit.makeRouter()
    let api = try kit.authenticated(router, tokens: tokens)
    GrabController(
        board: board, audit: GrabAudit(db: database), clients: kit.clients,
        credentials: try ServiceCredentials(tokens: tokens)
    ).register(on: api)
    return kit.makeApplication(router: router)
}
