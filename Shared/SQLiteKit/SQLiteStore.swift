import Foundation
@_exported import GRDB
import Logging
import NIOPosix

/// How a service opens its own database file.
public struct SQLiteConfiguration: Sendable {
    /// The file; every service has its own and no other process opens it.
    public var path: String
    /// Readers that may run at once beside the single writer (WAL lets them read while it writes).
    public var maximumReaders: Int
    /// How long a statement waits for a lock before it fails with `SQLITE_BUSY`.
    public var busyTimeout: Duration
    /// When a commit reaches the disk.
    public var durability: Durability

    /// `PRAGMA synchronous` under WAL.
    public enum Durability: String, Sendable {
        /// Each commit waits for the WAL to be synced to disk: survives a power loss.
        case full
        /// Commits are written to the WAL without waiting for the disk; the WAL is synced at each
        /// checkpoint. A crash of the process loses nothing; a power loss or kernel crash can lose the
        /// last commits — whole transactions, never half of one, so a row and its outbox event go together.
        case normal
    }

    public init(path: String, maximumReaders: Int = 4, busyTimeout: Duration = .seconds(5), durability: Durability = .full) {
        self.path = path
        self.maximumReaders = maximumReaders
        self.busyTimeout = busyTimeout
        self.durability = durability
    }
}

/// A service's SQLite database: one writer, a pool of readers, WAL, versioned migrations.
///
/// Built on GRDB's `DatabasePool` over the system libsqlite3: its async `read`/`write` run the SQLite
/// calls on GRDB's own dispatch queues, so they never block Swift's cooperative threads, and its
/// statements bind parameters (SQL strings never carry values). `write` is one transaction: a thrown
/// error rolls everything in it back.
public final class SQLiteStore: Sendable {
    public let pool: DatabasePool
    public let path: String

    /// Opens (creating if needed) the database and applies every migration not applied yet, on the NIO
    /// thread pool: opening and migrating block, and must not hold up Swift's cooperative threads.
    public static func open(
        configuration: SQLiteConfiguration, migrations: SQLiteMigrations, logger: Logger? = nil
    ) async throws -> SQLiteStore {
        try await NIOThreadPool.singleton.runIfActive {
            try SQLiteStore(configuration: configuration, migrations: migrations, logger: logger)
        }
    }

    /// Opens the database and migrates it, blocking the calling thread; from async code use `open`.
    public init(configuration: SQLiteConfiguration, migrations: SQLiteMigrations, logger: Logger? = nil) throws {
        let directory = URL(fileURLWithPath: configuration.path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var config = Configuration()
        config.maximumReaderCount = max(1, configuration.maximumReaders)
        let timeout = configuration.busyTimeout.components
        config.busyMode = .timeout(TimeInterval(timeout.seconds) + TimeInterval(timeout.attoseconds) / 1e18)
        config.foreignKeysEnabled = true
        config.label = URL(fileURLWithPath: configuration.path).lastPathComponent
        let synchronous = configuration.durability == .full ? "FULL" : "NORMAL"
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = \(synchronous)") }
        self.pool = try DatabasePool(path: configuration.path, configuration: config)
        self.path = configuration.path
        let applied = try migrations.apply(to: pool)
        if !applied.isEmpty {
            logger?.info("migrations applied", metadata: ["database": "\(configuration.path)", "migrations": "\(applied)"])
        }
    }

    /// Reads from a snapshot; runs beside the writer and other readers.
    public func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await pool.read(body)
    }

    /// Writes in one transaction, committed when `body` returns, rolled back when it throws.
    public func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await pool.write(body)
    }

    /// Migrations applied so far, in order.
    public func appliedMigrations() async throws -> [String] {
        try await pool.read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
        }
    }

    /// A cheap query that proves the file can be read: what readiness checks call.
    public func ping() async throws {
        _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
    }

    /// Waits for running reads and writes, checkpoints the WAL and closes every connection; later calls fail.
    /// Runs on the NIO thread pool, since closing waits for work in flight.
    public func close() async throws {
        let pool = self.pool
        try await NIOThreadPool.singleton.runIfActive { try pool.close() }
    }
}

/// Versioned migrations, each applied once, in the order added, recorded in the database itself.
public struct SQLiteMigrations: Sendable {
    private var steps: [(String, @Sendable (Database) throws -> Void)] = []

    public init() {}

    /// Adds a migration; `identifier` is its permanent name (say `v1-users`): never rename or edit an applied one.
    public mutating func add(_ identifier: String, _ migrate: @escaping @Sendable (Database) throws -> Void) {
        steps.append((identifier, migrate))
    }

    public var identifiers: [String] { steps.map(\.0) }

    /// Applies what is missing; returns the identifiers it applied now (empty when up to date).
    @discardableResult
    public func apply(to writer: some DatabaseWriter) throws -> [String] {
        var migrator = DatabaseMigrator()
        for (identifier, migrate) in steps {
            migrator.registerMigration(identifier, migrate: migrate)
        }
        let before = try writer.read { db in try migrator.appliedIdentifiers(db) }
        try migrator.migrate(writer)
        return identifiers.filter { !before.contains($0) }
    }
}
