import Foundation
@_exported import GRDB
import Logging
import Metrics
import NIOPosix
import Synchronization

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
    /// Pages each connection keeps in memory, in KiB (`PRAGMA cache_size`); nil keeps SQLite's 2 MiB. A
    /// store whose working set is larger (analytics' rollups and fixes) reads the same pages back from
    /// the kernel on every transaction without it.
    public var cacheKiB: Int?

    /// `PRAGMA synchronous` under WAL.
    public enum Durability: String, Sendable {
        /// Each commit waits for the WAL to be synced to disk: survives a power loss.
        case full
        /// Commits are written to the WAL without waiting for the disk; the WAL is synced at each
        /// checkpoint. A crash of the process loses nothing; a power loss or kernel crash can lose the
        /// last commits — whole transactions, never half of one, so a row and its outbox event go together.
        case normal
    }

    public init(
        path: String, maximumReaders: Int = 4, busyTimeout: Duration = .seconds(5), durability: Durability = .full, cacheKiB: Int? = nil
    ) {
        self.cacheKiB = cacheKiB
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
/// statements bind parameters (SQL strings never carry values). `write` is atomic (its own savepoint in a
/// transaction shared with the writes waiting beside it, see `write`): a thrown error rolls back
/// everything it wrote.
public final class SQLiteStore: Sendable {
    public let pool: DatabasePool
    public let path: String
    private let writes: GroupedWrites

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
        let cache = configuration.cacheKiB.map { max(64, $0) }
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
            // Debian's SQLite is built with SECURE_DELETE: a deleted row's bytes are zeroed, and so is a
            // page freed by a delete, which writes that page to the WAL once more. FAST keeps the zeroing
            // within pages the delete writes anyway and no longer writes freed pages: a published outbox
            // row, a pruned processed event or a trimmed fix can stay readable in the file's free pages
            // until they are reused.
            try db.execute(sql: "PRAGMA secure_delete = FAST")
            if let cache { try db.execute(sql: "PRAGMA cache_size = -\(cache)") }
        }
        self.pool = try DatabasePool(path: configuration.path, configuration: config)
        self.path = configuration.path
        self.writes = GroupedWrites(pool: pool, database: URL(fileURLWithPath: configuration.path).lastPathComponent)
        let applied = try migrations.apply(to: pool)
        if !applied.isEmpty {
            logger?.info("migrations applied", metadata: ["database": "\(configuration.path)", "migrations": "\(applied)"])
        }
    }

    /// Reads from a snapshot; runs beside the writer and other readers.
    public func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await pool.read(body)
    }

    /// Writes atomically: `body`'s changes commit together when it returns and are rolled back when it
    /// throws; the call returns once they are committed.
    ///
    /// Writes that arrive while the writer is busy commit together (group commit): the next transaction
    /// runs every waiting body, each in a savepoint of its own, so a body that throws takes back its own
    /// changes and no one else's, and the group pays for one transaction and one commit (one write of
    /// each page the group touched) instead of one each, and one hand-over to the writer's queue. A
    /// failed commit fails every write of the group. Bodies run in arrival order.
    public func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            writes.submit(
                GroupedWrites.Job(
                    run: { db in
                        do {
                            let value = try body(db)
                            return .init(failed: false) { error in
                                if let error { continuation.resume(throwing: error) } else { continuation.resume(returning: value) }
                            }
                        } catch {
                            return .init(failed: true) { _ in continuation.resume(throwing: error) }
                        }
                    },
                    fail: { continuation.resume(throwing: $0) }))
        }
    }

    /// Writes and the transactions that committed them since the store opened (`transactions` ≤ `writes`
    /// when writes were grouped).
    public var writeCounts: (writes: Int, transactions: Int) { writes.counts }

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

/// The writes waiting for the writer, run as groups: one transaction per group, a savepoint per write.
final class GroupedWrites: Sendable {
    /// What a body did, and how to tell its caller once the group's fate is known.
    struct Outcome: Sendable {
        /// The body threw: its changes are to be rolled back (and `reply` ignores the commit's outcome).
        var failed: Bool
        /// Called with nil when the group committed, with the error when it did not.
        var reply: @Sendable ((any Error)?) -> Void
    }

    struct Job: Sendable {
        var run: @Sendable (Database) -> Outcome
        /// Tells the caller the group failed before its body ran.
        var fail: @Sendable (any Error) -> Void
    }

    private struct State {
        var waiting: [Job] = []
        var running = false
        var writes = 0
        var transactions = 0
    }

    /// Writes one transaction takes at most; the rest wait for the next.
    static let maximumGroup = 128

    private let pool: DatabasePool
    private let state = Mutex(State())
    /// `hailstorm_sqlite_writes_total` (bodies run) and `hailstorm_sqlite_commits_total` (transactions
    /// committed): their ratio is the group size.
    private let writeCounter: Counter
    private let commitCounter: Counter

    init(pool: DatabasePool, database: String) {
        self.pool = pool
        self.writeCounter = Counter(label: "hailstorm_sqlite_writes_total", dimensions: [("database", database)])
        self.commitCounter = Counter(label: "hailstorm_sqlite_commits_total", dimensions: [("database", database)])
    }

    var counts: (writes: Int, transactions: Int) { state.withLock { ($0.writes, $0.transactions) } }

    func submit(_ job: Job) {
        let start = state.withLock { state -> Bool in
            state.waiting.append(job)
            if state.running { return false }
            state.running = true
            return true
        }
        if start { runNextGroup() }
    }

    /// Takes what waits and runs it on the writer's queue; when it is done, the next group, until none waits.
    private func runNextGroup() {
        let group = state.withLock { state -> [Job] in
            let taken = Array(state.waiting.prefix(Self.maximumGroup))
            state.waiting.removeFirst(taken.count)
            if taken.isEmpty { state.running = false } else { state.writes += taken.count; state.transactions += 1 }
            return taken
        }
        guard !group.isEmpty else { return }
        writeCounter.increment(by: group.count)
        pool.asyncWriteWithoutTransaction { db in
            self.run(group, in: db)
            self.runNextGroup()
        }
    }

    private func run(_ group: [Job], in db: Database) {
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(group.count)
        do {
            try db.inTransaction {
                if group.count == 1 {
                    // Alone, a body needs no savepoint: when it throws, the whole transaction is rolled back.
                    let outcome = group[0].run(db)
                    outcomes.append(outcome)
                    return outcome.failed ? .rollback : .commit
                }
                for job in group {
                    try db.inSavepoint {
                        let outcome = job.run(db)
                        outcomes.append(outcome)
                        return outcome.failed ? .rollback : .commit
                    }
                }
                return .commit
            }
            commitCounter.increment()
            for outcome in outcomes { outcome.reply(nil) }
        } catch {
            for outcome in outcomes { outcome.reply(error) }
            for job in group.dropFirst(outcomes.count) { job.fail(error) }
        }
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

extension Database {
    /// Rebuilds `table` with its `INTEGER PRIMARY KEY AUTOINCREMENT` key as a plain rowid key, its rows,
    /// their keys and its indexes kept; does nothing when the key is plain already. For a migration.
    ///
    /// `AUTOINCREMENT` makes every commit that inserts into the table rewrite `sqlite_sequence`, one more
    /// page per commit in the WAL. A plain rowid key is the highest key plus one: it still grows as long
    /// as the table's newest rows are not deleted (the table's own order, not a promise of the schema).
    /// For tables no foreign key points to.
    public func dropAutoincrement(from table: String) throws {
        guard
            let create = try String.fetchOne(
                self, sql: "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", arguments: [table])
        else { throw DatabaseError(message: "no table \(table)") }
        guard let keyword = create.range(of: " AUTOINCREMENT", options: .caseInsensitive) else { return }
        let indexes = try String.fetchAll(
            self, sql: "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", arguments: [table])
        let quoted = table.quotedDatabaseIdentifier
        let old = "\(table)_autoincrement".quotedDatabaseIdentifier
        try execute(sql: "ALTER TABLE \(quoted) RENAME TO \(old)")
        try execute(sql: create.replacingCharacters(in: keyword, with: ""))
        try execute(sql: "INSERT INTO \(quoted) SELECT * FROM \(old)")
        try execute(sql: "DROP TABLE \(old)")
        for index in indexes { try execute(sql: index) }
    }
}

