import Configuration
import Contracts
import EventBus
import Foundation
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// Builds the payment service from configuration.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys), `auth.denylist.check` (true);
/// `payment.commission.percent` (the platform's share of each fare, 20); the sandbox provider
/// `payment.sandbox.latency.ms` (50), `payment.sandbox.failure.rate` (0…1, 0) and `payment.sandbox.key`
/// (the Redis hash of its charges, `payment:sandbox:charges`); `payment.wait.seconds` (how long a repeated
/// request waits for a payment in flight elsewhere, 10); `payment.recovery.after.seconds` (a payment
/// processing this long lost its request and is settled from the provider's books, 60). With `shards`
/// naming more than one for payment, this instance keeps shard `shard`: the payments of the riders whose
/// ids fall on it (the gateway sends a rider's payments there), each with its ledger entries; its ids
/// name it, and the ledger is each shard's books summed.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "payment", reader: reader, defaultPort: 9006)
    let tokens = try await kit.accessTokens()
    let commission = try reader.int(forKey: "payment.commission.percent", default: 20, in: 0...100)
    let failureRate = try reader.double(forKey: "payment.sandbox.failure.rate", default: 0, in: 0...1)
    let database = try await kit.openDatabase(migrations: PaymentStore.migrations, durability: .full)
    let wakeups = OutboxWakeups()
    var desk = PaymentDesk(
        store: PaymentStore(db: database, source: kit.name),
        provider: SandboxPaymentProvider(
            redis: kit.redis, key: reader.string(forKey: "payment.sandbox.key", default: "payment:sandbox:charges"),
            latency: .milliseconds(max(0, try reader.int(forKey: "payment.sandbox.latency.ms", default: 50, in: 0...60_000))),
            failureRate: failureRate),
        rules: LedgerRules(commissionPercent: commission), clients: kit.clients,
        credentials: try ServiceCredentials(tokens: tokens), inFlight: InFlightPayments(), wakeups: wakeups,
        waitLimit: .seconds(max(1, try reader.int(forKey: "payment.wait.seconds", default: 10, in: 1...600))), logger: kit.logger)
    desk.shard = kit.configuration.ownShard
    kit.logger.notice("payments go to the sandbox provider: no money moves", metadata: ["failure_rate": "\(failureRate)"])

    kit.relayOutbox(of: database, wakeups: wakeups)
    kit.trimStreams([PaymentEvents.Succeeded.stream])
    let recoverAfter = max(5, try reader.int(forKey: "payment.recovery.after.seconds", default: 60, in: 5...86_400))
    kit.addService(PaymentRecoveryService(desk: desk, after: .seconds(recoverAfter), logger: kit.logger)
        .periodic(every: .seconds(max(1, recoverAfter / 4))))

    let router = kit.makeRouter()
    let api = try kit.authenticated(router, tokens: tokens)
    PaymentController(desk: desk).register(on: api)
    return kit.makeApplication(router: router)
}
