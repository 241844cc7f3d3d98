import Configuration
import Contracts
import Foundation
import Logging
import RedisKit
import SQLiteKit

/// How a service runs: development (defaults are fine) or production (refuses default secrets).
public enum RuntimeMode: String, Sendable {
    case development
    case production
}

extension ConfigReader {
    /// The reader every Hailstorm executable uses: command line (`--http-port 9001`) over environment
    /// (`HTTP_PORT=9001`) over the given defaults.
    ///
    /// Keys that hold secrets (anything with `secret`, `password` or `key` in its name) are marked
    /// secret, so access logs never print them.
    public static func hailstorm(
        arguments: [String] = CommandLine.arguments,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        defaults: [String: ConfigValue] = [:]
    ) -> ConfigReader {
        ConfigReader(providers: hailstormProviders(arguments: arguments, environment: environment, defaults: defaults))
    }

    /// ``hailstorm(arguments:environment:defaults:)`` plus secret files: when `secrets.dir`
    /// (`SECRETS_DIR`) names a folder, each file in it holds one key, its name the key with dashes
    /// (`auth-signing-key` holds `auth.signing.key`) — the way Kubernetes mounts a Secret as a volume, so a
    /// secret need not sit in the process's environment. The command line and the environment still win.
    public static func loadHailstorm(
        arguments: [String] = CommandLine.arguments,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws -> ConfigReader {
        var providers = hailstormProviders(arguments: arguments, environment: environment, defaults: [:])
        let plain = ConfigReader(providers: providers)
        if let folder = plain.string(forKey: "secrets.dir"), !folder.isEmpty {
            do {
                let files = try await DirectoryFilesProvider(directoryPath: .init(folder))
                providers.insert(files, at: providers.count - 1)
            } catch {
                throw ConfigurationError("secrets.dir \(folder) cannot be read: \(error)")
            }
        }
        return ConfigReader(providers: providers)
    }

    /// The whole number at `key`, or `defaultValue`; a value outside `range` stops the service with an
    /// error naming the key, instead of a trap later in arithmetic or a timer that never fires.
    public func int(forKey key: String, default defaultValue: Int, in range: ClosedRange<Int>) throws -> Int {
        // Text that is not a whole number is refused, not read as the default: a typo in a setting must
        // not run the service on a value nobody chose.
        if let text = string(forKey: ConfigKey(key)), Int(text.trimmingCharacters(in: .whitespaces)) == nil {
            throw ConfigurationError("\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound), not \"\(text)\"")
        }
        let value = int(forKey: ConfigKey(key), default: defaultValue)
        guard range.contains(value) else {
            throw ConfigurationError("\(key) must be from \(range.lowerBound) to \(range.upperBound), not \(value)")
        }
        return value
    }

    /// The items of a comma-separated list at `key` (`order=3,coupon=2`), however it was given: the
    /// command line's provider hands `--key a,b` over as a list, of which `string(forKey:)` reads only
    /// the first item (`--shards coupon=2,order=3` read as `coupon=2` alone).
    public func list(forKey key: String) -> [String] {
        text(forKey: key, default: "").split(separator: ",").map(String.init)
    }

    /// The whole text at `key`, or `defaultValue`, commas and all, however it was given (see
    /// `list(forKey:)`): for a value whose commas are not a list's (`Berlin@52.52,13.40,25`).
    public func text(forKey key: String, default defaultValue: String) -> String {
        (stringArray(forKey: ConfigKey(key)) ?? string(forKey: ConfigKey(key)).map { [$0] })?.joined(separator: ",") ?? defaultValue
    }

    /// The number at `key`, or `defaultValue`; a value that is not a finite number within `range`, or
    /// text that is not a number, stops the service with an error naming the key.
    public func double(forKey key: String, default defaultValue: Double, in range: ClosedRange<Double>) throws -> Double {
        if let text = string(forKey: ConfigKey(key)), Double(text.trimmingCharacters(in: .whitespaces)) == nil {
            throw ConfigurationError("\(key) must be a number from \(range.lowerBound) to \(range.upperBound), not \"\(text)\"")
        }
        let value = double(forKey: ConfigKey(key), default: defaultValue)
        guard value.isFinite, range.contains(value) else {
            throw ConfigurationError("\(key) must be from \(range.lowerBound) to \(range.upperBound), not \(value)")
        }
        return value
    }

    /// `true` or `false` at `key`, or `defaultValue`; other text stops the service with an error naming the key.
    public func flag(forKey key: String, default defaultValue: Bool) throws -> Bool {
        if let text = string(forKey: ConfigKey(key)) {
            switch text.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true", "1", "yes": return true
            case "false", "0", "no": return false
            default: throw ConfigurationError("\(key) must be true or false, not \"\(text)\"")
            }
        }
        return bool(forKey: ConfigKey(key), default: defaultValue)
    }

    /// The text at `key`, or `defaultValue`, for a name that goes into Redis keys beside a hash tag
    /// (a key prefix, a stream's name): empty or holding `{` or `}` stops the service with an error
    /// naming the key, since a brace in it would move the key to another slot.
    public func keyName(forKey key: String, default defaultValue: String) throws -> String {
        let value = string(forKey: ConfigKey(key), default: defaultValue)
        guard !value.isEmpty, !value.contains(where: { $0 == "{" || $0 == "}" }) else {
            throw ConfigurationError("\(key) must be a name, not empty and without braces (hash tags go inside them), not \"\(value)\"")
        }
        return value
    }

    private static func hailstormProviders(
        arguments: [String], environment: [String: String], defaults: [String: ConfigValue]
    ) -> [any ConfigProvider] {
        let isSecret: @Sendable (String, String) -> Bool = { key, _ in
            let lowered = key.lowercased()
            return lowered.contains("secret") || lowered.contains("password") || lowered.hasSuffix("key")
        }
        var defaultValues: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, value) in defaults {
            defaultValues[AbsoluteConfigKey(key.split(separator: ".").map(String.init))] = value
        }
        return [
            CommandLineArgumentsProvider(arguments: arguments, secretsSpecifier: .dynamic(isSecret)),
            EnvironmentVariablesProvider(environmentVariables: environment, secretsSpecifier: .dynamic(isSecret)),
            InMemoryProvider(name: "defaults", values: defaultValues),
        ]
    }
}

/// The settings every service shares, read from configuration; each key is documented where it is read.
public struct ServiceConfiguration: Sendable {
    public var name: String
    public var instanceID: String
    public var mode: RuntimeMode
    public var host: String
    public var port: Int
    /// Where to write the port the server bound (`http.port.file`), for a supervisor that starts it on port 0.
    public var portFile: String?
    /// The host other services use to reach this instance (what discovery announces).
    public var advertisedHost: String
    public var bodyLimit: Int
    public var requestTimeout: Duration?
    public var idleTimeout: Duration
    public var connectionsPerClient: Int
    /// Each connection's handlers run on the event loop that carries the connection (`EdgeChannel`).
    public var handlersOnLoop: Bool
    public var logLevel: Logger.Level
    public var logFormat: String
    public var redis: RedisConfiguration
    public var discoveryBackend: String
    public var etcdEndpoint: String
    /// Sign-in to an etcd with authentication on: `discovery.etcd.user` and `discovery.etcd.password` (secret).
    public var etcdCredentials: (user: String, password: String)?
    public var discoveryTTL: Duration
    public var discoveryPrefix: String
    public var staticServices: String
    public var dataDirectory: String
    public var client: ServiceClientConfiguration
    /// The shard of this service's data the instance owns (0 for a service that is not split).
    public var shard: Int
    /// Streams this service writes are trimmed past these, never past what a consumer group has not read.
    public var streamMaxLength: Int
    public var streamMaxAge: Duration
    /// Records of handled events (`processed_events`) are kept this long, and at most this many.
    public var processedEventsRetention: Duration
    public var processedEventsMaxRows: Int
    /// How often streams are trimmed and handled-event records pruned to the bounds above.
    public var retentionInterval: Duration
    /// How long the outbox relay waits, once woken by a commit, for further commits to publish with it.
    public var outboxLinger: Duration

    public init(
        name: String, reader: ConfigReader, defaultPort: Int, defaultConnectionsPerClient: Int = 0, defaultHandlersOnLoop: Bool = false
    ) throws {
        self.name = name
        // `instance.id`: unique per process; defaults to the service name and a random suffix.
        self.instanceID = reader.string(forKey: "instance.id")
            ?? "\(name)-\(RandomID.uuid().prefix(8))"
        // `mode`: development | production. Production refuses default secrets.
        self.mode = RuntimeMode(rawValue: reader.string(forKey: "mode", default: "development")) ?? .development
        // `http.host`, `http.port`: where the service listens (port 0 picks a free one).
        self.host = reader.string(forKey: "http.host", default: "127.0.0.1")
        self.port = try reader.int(forKey: "http.port", default: defaultPort, in: 0...65535)
        // `http.port.file`: once listening, the bound port is written to this file (replaced atomically),
        // so whoever started the service on port 0 learns where it listens without guessing a port first.
        self.portFile = reader.string(forKey: "http.port.file")
        // `http.advertise.host`: the address announced to discovery; defaults to `http.host`.
        self.advertisedHost = reader.string(forKey: "http.advertise.host", default: host == "0.0.0.0" ? "127.0.0.1" : host)
        // `http.body.limit`: the largest request body accepted, in bytes.
        self.bodyLimit = try reader.int(forKey: "http.body.limit", default: 1 << 20, in: 1...(1 << 30))
        // `http.timeout.ms`: the longest a request may run: the deadline of one that brings none of its
        // own, and the cap of one that asks for more (0: no timeout; callers' deadlines capped at an hour).
        let timeout = try reader.int(forKey: "http.timeout.ms", default: 10_000, in: 0...3_600_000)
        // `http.idle.timeout.seconds`: a connection that sends no complete request head for this long
        // (half a header, nothing at all, or an idle keep-alive) is closed.
        self.idleTimeout = .seconds(try reader.int(forKey: "http.idle.timeout.seconds", default: 15, in: 1...3600))
        // `http.connections.per.client`: open connections one peer address may hold (0: no cap; the
        // gateway's default is 512, the services behind it have none).
        self.connectionsPerClient = try reader.int(
            forKey: "http.connections.per.client", default: defaultConnectionsPerClient, in: 0...1_000_000)
        self.requestTimeout = timeout > 0 ? .milliseconds(timeout) : nil
        // `http.handlers.on.loop`: run each connection's requests on the event loop that reads and writes
        // the connection instead of on Swift's shared pool — no thread hand-over per request and per answer
        // awaited from Redis, but the loop's I/O waits while a handler computes. On by default where the
        // handlers are short (coupon's claim: one Lua script), off elsewhere (docs/benchmarks.md).
        self.handlersOnLoop = try reader.flag(forKey: "http.handlers.on.loop", default: defaultHandlersOnLoop)
        // `log.level`: trace … critical. `log.format`: json (default) | text.
        self.logLevel = Logger.Level(rawValue: reader.string(forKey: "log.level", default: "info")) ?? .info
        self.logFormat = reader.string(forKey: "log.format", default: "json")
        // `redis.host`, `redis.port`, `redis.pool`: the shared Redis server and connections to it;
        // `redis.password` (secret) and `redis.username` when it requires them (compose and Kubernetes do).
        // `events.stream.max.length` (1,000,000) and `events.stream.max.age.hours` (168): the streams this
        // service writes keep about this many entries and this much time, once every consumer group has
        // read them (entries a group has not read are never trimmed).
        self.streamMaxLength = try reader.int(forKey: "events.stream.max.length", default: 1_000_000, in: 1...1_000_000_000)
        self.streamMaxAge = .seconds(3600 * (try reader.int(forKey: "events.stream.max.age.hours", default: 168, in: 1...87_600)))
        // `events.processed.retention.hours` (168) and `events.processed.max.rows` (1,000,000): how long and
        // how many handled event ids are remembered to recognise a redelivery; far beyond any redelivery.
        self.processedEventsRetention = .seconds(
            3600 * (try reader.int(forKey: "events.processed.retention.hours", default: 168, in: 1...87_600)))
        self.processedEventsMaxRows = try reader.int(forKey: "events.processed.max.rows", default: 1_000_000, in: 1_000...1_000_000_000)
        // `events.retention.interval.seconds` (60): how often the streams are trimmed and `processed_events`
        // pruned to those bounds; between two runs they may grow by what arrives in the meantime.
        self.retentionInterval = .seconds(try reader.int(forKey: "events.retention.interval.seconds", default: 60, in: 1...86_400))
        // `events.outbox.linger.ms` (5): once a commit wakes the outbox relay, it waits this long for the
        // commits behind it, so that a busy service publishes its events in one pipeline per few
        // milliseconds, not one per commit, and its followers wake once per such batch (0: at once).
        self.outboxLinger = .milliseconds(try reader.int(forKey: "events.outbox.linger.ms", default: 5, in: 0...1000))
        self.redis = RedisConfiguration(
            host: reader.string(forKey: "redis.host", default: "127.0.0.1"),
            port: try reader.int(forKey: "redis.port", default: 6379, in: 1...65535),
            poolSize: try reader.int(forKey: "redis.pool", default: 4, in: 1...256),
            password: reader.string(forKey: "redis.password", isSecret: true),
            username: reader.string(forKey: "redis.username"),
            // `redis.command.timeout.ms`: a reply later than this means Redis hung: the connection closes and
            // its commands fail (503); 0 waits for ever. A request's own deadline cuts the wait shorter.
            commandTimeout: .milliseconds(try reader.int(forKey: "redis.command.timeout.ms", default: 3000, in: 0...600_000)),
            // `redis.max.pending`: command batches waiting for replies per connection before more are refused.
            maxPending: try reader.int(forKey: "redis.max.pending", default: 10_000, in: 1...10_000_000),
            // `redis.cluster`: true when `redis.host:port` is a node of a Redis Cluster (every command goes to
            // its slot's master); `redis.cluster.nodes`: further nodes (`host:port,host:port`) to ask for the
            // slot map when that one does not answer.
            cluster: try reader.flag(forKey: "redis.cluster", default: false),
            clusterNodes: try Self.redisNodes(reader.list(forKey: "redis.cluster.nodes").joined(separator: ","))
        )
        // `discovery.backend`: etcd (local and VM runs) | static (compose, Kubernetes).
        self.discoveryBackend = reader.string(forKey: "discovery.backend", default: "etcd")
        // `discovery.etcd.endpoint`: etcd's client URL.
        self.etcdEndpoint = reader.string(forKey: "discovery.etcd.endpoint", default: "http://127.0.0.1:2379")
        if let user = reader.string(forKey: "discovery.etcd.user"), !user.isEmpty {
            self.etcdCredentials = (user, reader.string(forKey: "discovery.etcd.password", isSecret: true) ?? "")
        } else {
            self.etcdCredentials = nil
        }
        // `discovery.ttl.seconds`: the registration lease; a dead instance vanishes within it.
        self.discoveryTTL = .seconds(try reader.int(forKey: "discovery.ttl.seconds", default: 10, in: 2...3600))
        // `discovery.prefix`: the etcd key prefix instances register under (one per deployment).
        self.discoveryPrefix = reader.string(forKey: "discovery.prefix", default: "/hailstorm/services/")
        // `discovery.static`: `login=host:port,…` for the static backend; unnamed services resolve by DNS.
        self.staticServices = reader.list(forKey: "discovery.static").joined(separator: ",")
        // `data.dir`: where this service keeps its SQLite file (`<data.dir>/<service>.sqlite`).
        self.dataDirectory = reader.string(forKey: "data.dir", default: ".hailstorm/data")
        self.client = try ServiceClientConfiguration(reader: reader.scoped(to: "client"))
        // `shards`: how the services that keep their own data are split (`order=3,coupon=2`; one shard each
        // when not named), the same on every instance of every service; `shard`: which shard of its own
        // service this instance owns (0 to its count − 1).
        do {
            self.client.shards = try ShardMap(parsing: reader.list(forKey: "shards").joined(separator: ","))
        } catch {
            throw ConfigurationError(error.description)
        }
        let count = client.shards.count(of: name)
        self.shard = try reader.int(forKey: "shard", default: 0, in: 0...(Shards.maxCount - 1))
        guard shard < count else {
            throw ConfigurationError("shard must be from 0 to \(count - 1): shards gives \(name) \(count) shard\(count == 1 ? "" : "s"), not \(shard + 1) or more")
        }
    }

    /// Whether this service's data is split (`shards` names more than one for it).
    public var isSharded: Bool { client.shards.isSharded(name) }

    /// The shard of its service this instance owns.
    public var ownShard: Shard { Shard(index: shard, of: client.shards.count(of: name)) }

    /// This service's own database file.
    public var sqlitePath: String { dataDirectory + "/" + name + ".sqlite" }

    /// `host:port,host:port` as nodes; a part that is not one stops the service with an error naming it.
    static func redisNodes(_ list: String) throws -> [RedisNode] {
        try list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { part in
            guard let node = RedisNode(part) else {
                throw ConfigurationError("redis.cluster.nodes: \(part) is not host:port")
            }
            return node
        }
    }
}
