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
    let live = LiveFeed(
        store: store, prometheus: prometheus, clients: kit.clients, credentials: try ServiceCredentials(tokens: tokens), redis: kit.redis,
        interval: .milliseconds(push))
    kit.addService(live.periodic(logger: kit.logger))

    let router = kit.makeRouter()
    // `command.javascript.dir` (/usr/share/javascript): where Debian's libjs-leaflet and libjs-chart.js are.
    PageController(javascriptDirectory: reader.string(forKey: "command.javascript.dir", default: "/usr/share/javascript"), logger: kit.logger)
        .register(on: router)
    let api = kit.authenticated(router, tokens: tokens)
    CommandController(store: store, clients: kit.clients, prometheus: prometheus, alerts: alerts, live: live).register(on: api)
    return kit.makeApplication(router: router)
}
