import Foundation
import HailKitTesting
import SQLiteKit
import Synchronization
import Testing

@Suite("SQLiteKit on real database files")
struct SQLiteStoreTests {
    static func migrations() -> SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-rides") { db in
            try db.execute(sql: "CREATE TABLE rides (id INTEGER PRIMARY KEY, fare INTEGER NOT NULL)")
            try db.execute(sql: "CREATE TABLE migration_runs (name TEXT)")
            try db.execute(sql: "INSERT INTO migration_runs VALUES ('v1')")
        }
        migrations.add("v2-ride-city") { db in
            try db.execute(sql: "ALTER TABLE rides ADD COLUMN city TEXT NOT NULL DEFAULT 'berlin'")
            try db.execute(sql: "INSERT INTO migration_runs VALUES ('v2')")
        }
        return migrations
    }

    func path() throws -> String {
        try TestEnvironment.temporaryDirectory("sqlite") + "/service.sqlite"
    }

    @Test("migrations run once, in order, and opening again applies nothing")
    func migrationsRunOnce() async throws {
        let file = try path()
        let first = try await SQLiteStore.open(configuration: .init(path: file), migrations: Self.migrations())
        #expect(try await first.appliedMigrations() == ["v1-rides", "v2-ride-city"])
        try await first.close()

        let second = try await SQLiteStore.open(configuration: .init(path: file), migrations: Self.migrations())
        #expect(try Self.migrations().apply(to: second.pool).isEmpty)
        let runs = try await second.read { db in try String.fetchAll(db, sql: "SELECT name FROM migration_runs") }
        #expect(runs == ["v1", "v2"])
        let journal = try await second.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        #expect(journal == "wal")
        try await second.close()
    }

    @Test("a table rebuilt without AUTOINCREMENT keeps its rows, keys and indexes, and its inserts leave sqlite_sequence alone")
    func dropAutoincrement() async throws {
        var migrations = SQLiteMigrations()
        migrations.add("v1-log") { db in
            try db.execute(sql: """
                CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, ride TEXT NOT NULL, note TEXT);
                CREATE INDEX log_ride ON log(ride, seq);
                INSERT INTO log (ride, note) VALUES ('r1', 'created'), ('r2', 'created'), ('r1', 'assigned');
                DELETE FROM log WHERE seq = 2;
                """)
        }
        let file = try path()
        let before = try await SQLiteStore.open(configuration: .init(path: file), migrations: migrations)
        try await before.close()
        migrations.add("v2-log-rowid") { db in
            try db.dropAutoincrement(from: "log")
            try db.dropAutoincrement(from: "log")  // a plain key already: nothing to do
        }
        let store = try await SQLiteStore.open(configuration: .init(path: file), migrations: migrations)
        let (rows, schema, indexes) = try await store.read { db in
            (
                try Row.fetchAll(db, sql: "SELECT seq, ride, note FROM log ORDER BY seq").map { "\($0[0] as Int):\($0[1] as String):\($0[2] as String)" },
                try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'log'") ?? "",
                try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'log'")
            )
        }
        #expect(rows == ["1:r1:created", "3:r1:assigned"])
        #expect(!schema.uppercased().contains("AUTOINCREMENT"))
        #expect(indexes == ["log_ride"])
        let (next, sequenceRows, plan) = try await store.write { db in
            try db.execute(sql: "INSERT INTO log (ride, note) VALUES ('r1', 'paid')")
            return (
                db.lastInsertedRowID,
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sqlite_sequence WHERE name LIKE 'log%'") ?? -1,
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT seq FROM log WHERE ride = 'r1' ORDER BY seq")
                    .map { $0["detail"] as String }.joined(separator: " ")
            )
        }
        #expect(next == 4)
        #expect(sequenceRows == 0)
        #expect(plan.contains("log_ride"))
        await #expect(throws: (any Error).self) { try await store.write { db in try db.dropAutoincrement(from: "no_such_table") } }
        try await store.close()
    }

    @Test("a failed transaction leaves nothing behind")
    func rollback() async throws {
        let store = try await SQLiteStore.open(configuration: .init(path: try path()), migrations: Self.migrations())
        struct Refused: Error {}
        await #expect(throws: Refused.self) {
            try await store.write { db in
                try db.execute(sql: "INSERT INTO rides (id, fare) VALUES (?, ?)", arguments: [1, 1200])
                try db.execute(sql: "INSERT INTO rides (id, fare) VALUES (?, ?)", arguments: [2, 900])
                throw Refused()
            }
        }
        // A constraint failure half-way rolls back the earlier statements too.
        await #expect(throws: (any Error).self) {
            try await store.write { db in
                try db.execute(sql: "INSERT INTO rides (id, fare) VALUES (?, ?)", arguments: [3, 500])
                try db.execute(sql: "INSERT INTO rides (id, fare) VALUES (?, ?)", arguments: [4, nil as Int?])
            }
        }
        let count = try await store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM rides") }
        #expect(count == 0)
        // Values are bound, never spliced into SQL.
        let hostile = "x'); DROP TABLE rides; --"
        try await store.write { db in
            try db.execute(sql: "INSERT INTO rides (id, fare, city) VALUES (?, ?, ?)", arguments: [5, 100, hostile])
        }
        let city = try await store.read { db in try String.fetchOne(db, sql: "SELECT city FROM rides WHERE id = 5") }
        #expect(city == hostile)
        try await store.close()
    }

    @Test("writes waiting for the writer commit together, and one that fails takes back only its own changes")
    func groupCommit() async throws {
        let store = try await SQLiteStore.open(configuration: .init(path: try path()), migrations: Self.migrations())
        struct Refused: Error, Equatable { var id: Int }
        // Hold the writer so that the writes below queue up behind it and run as groups.
        let holding = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        async let held: Void = store.write { db in
            try db.execute(sql: "INSERT INTO rides (id, fare) VALUES (0, 0)")
            holding.signal()
            _ = release.wait(timeout: .now() + 10)
        }
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                holding.wait()
                continuation.resume()
            }
        }
        let results = await withTaskGroup(of: (Int, Result<Int, Refused>).self) { group in
            for id in 1...300 {
                group.addTask {
                    do {
                        let fare = try await store.write { db -> Int in
                            try db.execute(sql: "INSERT INTO rides (id, fare) VALUES (?, ?)", arguments: [id, id * 10])
                            // Every tenth write fails after writing: its row must not survive.
                            if id % 10 == 0 { throw Refused(id: id) }
                            return try Int.fetchOne(db, sql: "SELECT fare FROM rides WHERE id = ?", arguments: [id]) ?? -1
                        }
                        return (id, .success(fare))
                    } catch let refused as Refused {
                        return (id, .failure(refused))
                    } catch {
                        return (id, .failure(Refused(id: -1)))
                    }
                }
            }
            // Let the held write finish once the others are waiting behind it.
            try? await Task.sleep(for: .milliseconds(200))
            release.signal()
            return await group.reduce(into: [Int: Result<Int, Refused>]()) { $0[$1.0] = $1.1 }
        }
        try await held
        // Every caller got its own answer: its fare, or its own refusal.
        for id in 1...300 {
            if id % 10 == 0 {
                #expect(results[id] == .failure(Refused(id: id)))
            } else {
                #expect(results[id] == .success(id * 10))
            }
        }
        let ids = try await store.read { db in try Int.fetchAll(db, sql: "SELECT id FROM rides ORDER BY id") }
        #expect(ids == [0] + (1...300).filter { $0 % 10 != 0 })
        // And they shared transactions: 301 writes in far fewer commits.
        let counts = store.writeCounts
        #expect(counts.writes == 301)
        #expect(counts.transactions < 301 / 4)
        try await store.close()
    }

    @Test("readers read while a writer is inside its transaction")
    func readersDuringWrite() async throws {
        let store = try await SQLiteStore.open(configuration: .init(path: try path()), migrations: Self.migrations())
        try await store.write { db in
            try db.execute(sql: "INSERT INTO rides (id, fare) VALUES (1, 100)")
        }
        let writerInside = DispatchSemaphore(value: 0)
        let readersDone = DispatchSemaphore(value: 0)

        async let write: Bool = store.write { db in
            try db.execute(sql: "INSERT INTO rides (id, fare) VALUES (2, 200)")
            writerInside.signal()
            // Hold the transaction open until the readers have finished (or give up after 10 s).
            return readersDone.wait(timeout: .now() + 10) == .success
        }
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                writerInside.wait()
                continuation.resume()
            }
        }
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask { try await store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM rides") ?? -1 } }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        readersDone.signal()
        let readersFinishedWhileWriting = try await write
        #expect(readersFinishedWhileWriting)
        // They saw the last committed state, not the writer's uncommitted row.
        #expect(counts == [1, 1, 1])
        let after = try await store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM rides") }
        #expect(after == 2)
        try await store.close()
    }
}
