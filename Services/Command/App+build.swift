import Configuration
import Contracts
import Foundation
import HailKit
import Hummingbird
import Logging
import SQLiteKit

/// Builds the command centre from configuration.
///
/// Keys beyond the kit's: `auth.jwks` and `auth.signing.key` (the kit's token keys), `auth.denylist.check`
/// (true); `command.prometheus.url` (Prometheus's address, `http://127.0.0.1:9090`; empty: no board and no
/// alerts book), `command.prometheus.timeout.ms` (2000), `command.alerts.poll.ms` (how often the firing
/// alerts are read, 2000), `command.live.push.ms` (how often a watching page gets a snapshot, 2000).
///
/// The command centre keeps one SQLite file (the audit log and the alerts book): run one instance.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "command", reader: reader, defaultPort: 9010)
    let tokens = try await kit.accessTokens()
    let database = try await kit.openDatabase(migrations: CommandStore.migrations, durability: .full)
    let store = CommandStore(db: database)

    let url = reader.string(forKey: "command.prometheus.url", default: "")
    var prometheus: PrometheusReader? = nil
    if !url.isEmpty {
        guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
            throw ConfigurationError("command.prometheus.url must be an http(s) address, not \(url)")
        }
        let timeout = try reader.int(forKey: "command.prometheus.timeout.ms", default: 2000, in: 100...60_000)
        prometheus = PrometheusReader(
            base: url.hasSuffix("/") ? String(url.dropLast()) : url, http: kit.httpClient, timeout: .milliseconds(Int64(timeout)))
    } else {
        kit.logger.notice("no command.prometheus.url: the service board and the alerts book stay empty")
    }
    let alerts = AlertWatch(store: store, prometheus: prometheus)
    let poll = try reader.int(forKey: "command.alerts.poll.ms", default: 2000, in: 100...600_000)
    if prometheus != nil {
        kit.addService(alerts.periodic(every: .milliseconds(poll), logger: kit.logger))
    }

    // `command.live.push.ms` (2000): how often a watching page gets a snapshot.
    let push = try reader.int(forKey: "command.live.push.ms", default: 2000, in: 250...60_000)
    let credentials = try ServiceCredentials(tokens: tokens)
    let live = LiveFeed(
        store: store, prometheus: prometheus, clients: kit.clients, credentials: credentials, redis: kit.redis,
        interval: .milliseconds(push))
    kit.addService(live.periodic(logger: kit.logger))

    // The command centre's own rules (`DomainRules`): `command.rules.check.ms` (10,000) how often,
    // `command.rules.window.seconds` (600), `command.rules.match.rate` (0.5) below which with at least
    // `command.rules.match.orders` (10) orders the match rate alerts, `command.rules.lag.entries` (10,000)
    // entries a consumer group may be behind.
    var rules = DomainRules.Settings()
    rules.window = Double(try reader.int(forKey: "command.rules.window.seconds", default: 600, in: 60...86_400))
    rules.minimumOrders = try reader.int(forKey: "command.rules.match.orders", default: 10, in: 1...1_000_000)
    rules.matchRate = try reader.double(forKey: "command.rules.match.rate", default: 0.5, in: 0...1)
    rules.lagEntries = try reader.int(forKey: "command.rules.lag.entries", default: 10_000, in: 1...100_000_000)
    // `command.rules.streams`: the event streams whose consumer groups are watched (comma-separated).
    rules.streams = reader.text(forKey: "command.rules.streams", default: rules.streams.joined(separator: ","))
        .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    let domain = DomainRules(store: store, clients: kit.clients, credentials: credentials, redis: kit.redis, settings: rules)
    let every = try reader.int(forKey: "command.rules.check.ms", default: 10_000, in: 500...3_600_000)
    kit.addService(domain.periodic(every: .milliseconds(every), logger: kit.logger))

    let router = kit.makeRouter()
    // `command.javascript.dir` (/usr/share/javascript): where Debian's libjs-leaflet and libjs-chart.js are.
    PageController(javascriptDirectory: reader.string(forKey: "command.javascript.dir", default: "/usr/share/javascript"), logger: kit.logger)
        .register(on: router)
    let api = try kit.authenticated(router, tokens: tokens)
    CommandController(store: store, clients: kit.clients, prometheus: prometheus, alerts: alerts, live: live, redis: kit.redis).register(on: api)
    return kit.makeApplication(router: router)
}
