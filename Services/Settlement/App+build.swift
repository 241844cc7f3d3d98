import Configuration
import Contracts
import EventBus
import Foundation
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// Builds the settlement service from configuration.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys), `auth.denylist.check` (true);
/// `settlement.schedule.seconds` (a batch runs this often, 3600; 0 runs batches only on demand);
/// `settlement.grace.seconds` (a completed order unpaid for longer is listed by the report, 3600).
///
/// Settlement keeps one SQLite file and reads both streams with one consumer each: run one instance.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "settlement", reader: reader, defaultPort: 9007)
    let tokens = try await kit.accessTokens()
    let database = try await kit.openDatabase(migrations: SettlementStore.migrations, durability: .full)
    let store = SettlementStore(db: database)
    kit.pruneProcessedEvents(in: database)
    for consumer in LedgerFeed.consumers(store: store, redis: kit.redis, instance: kit.configuration.instanceID, logger: kit.logger) {
        kit.addService(consumer)
    }
    let schedule = try reader.int(forKey: "settlement.schedule.seconds", default: 3600, in: 0...604_800)
    if schedule > 0 {
        // A batch every `schedule` seconds, besides those asked for through the API or the `run` command.
        let logger = kit.logger
        kit.addService(PeriodicWork("settlement-batch", every: .seconds(schedule), firstAfter: .seconds(schedule), logger: logger) {
            let batch = try await store.runBatch(trigger: "schedule", now: Date().timeIntervalSince1970)
            logger.info("scheduled batch", metadata: ["batch": "\(batch.id)", "entries": "\(batch.entries)", "cents": "\(batch.totalCents)"])
        })
    }
    let router = kit.makeRouter()
    let api = try kit.authenticated(router, tokens: tokens)
    SettlementController(
        store: store, clients: kit.clients, credentials: try ServiceCredentials(tokens: tokens),
        grace: try reader.double(forKey: "settlement.grace.seconds", default: 3600, in: 0...31_536_000)
    ).register(on: api)
    return kit.makeApplication(router: router)
}
