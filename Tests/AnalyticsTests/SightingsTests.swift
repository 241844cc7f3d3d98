@testable import Analytics
import Contracts
import EventBus
import Foundation
import HailKit
import HailKitTesting
import SQLiteKit
import Testing

/// Sightings (`seen`) that analytics remembers so that a driver's repeated fixes in a minute skip the
/// table: the distinct counts a user reads must stay what the table alone would give.
@Suite("analytics' remembered sightings")
struct SightingsTests {
    struct Refused: Error {}

    @Test("a driver counts once a minute however often seen; after a wipe, retention or a failed batch they are recorded again")
    func sightings() async throws {
        let folder = try TestEnvironment.temporaryDirectory("analytics-sightings")
        let db = try await SQLiteStore.open(
            configuration: SQLiteConfiguration(path: folder + "/analytics.sqlite"), migrations: AnalyticsStore.migrations)
        let store = AnalyticsStore(db: db, grids: try CityGrids(specification: CityGrids.defaultSpecification, edgeMeters: 460))
        let ingest = AnalyticsIngest(store: store, streams: .init(), gate: IngestGate())
        // A whole minute two minutes ago.
        let m = (Date().timeIntervalSince1970 / 60).rounded(.down) * 60 - 120
        func fixes(_ times: [Double], driver: String = "d1") throws -> EventEnvelope {
            try EventEnvelope(
                LocationEvents.Fixes(fixes: times.map {
                    LocationEvents.Fix(driverID: driver, lat: 52.52, lon: 13.405, at: $0, state: "available")
                }), source: "test")
        }
        func read(_ sql: String) async throws -> Int { try await db.read { try Int.fetchOne($0, sql: sql) ?? 0 } }
        func supply() async throws -> Int { try await read("SELECT SUM(value) FROM counts WHERE metric = 'supply_city'") }
        func seen(_ kind: String) async throws -> Int { try await read("SELECT COUNT(*) FROM seen WHERE kind = '\(kind)'") }
        let location = ingest.streams.location

        try await ingest.store([try fixes([m + 1, m + 11])], stream: location)
        #expect(try await supply() == 1)
        #expect(store.recent.count == 4, "driver and available, in the cell and in the city")
        // The same minute again, in a batch of its own: remembered, still one driver-minute.
        try await ingest.store([try fixes([m + 21])], stream: location)
        #expect(try await supply() == 1)
        #expect(try await seen("driver-city") == 1)
        #expect(try await read("SELECT COUNT(*) FROM fixes") == 3)

        // A rebuild's wipe empties the tables: the driver's next fix is a driver-minute again.
        try await store.wipe()
        #expect(store.recent.count == 0)
        try await ingest.store([try fixes([m + 31])], stream: location)
        #expect(try await supply() == 1)
        #expect(try await seen("available-city") == 1)

        // Retention takes this minute's sightings: the next fix records the driver again.
        _ = try await store.prune(fixesBefore: m + 60, seenBefore: m + 60)
        #expect(try await seen("driver-city") == 0)
        try await ingest.store([try fixes([m + 41])], stream: location)
        #expect(try await seen("driver-city") == 1)

        // A batch that fails is rolled back whole, and what it saw is not remembered.
        let batch = store.recent.batch()
        await #expect(throws: Refused.self) {
            try await db.write { db in
                try store.fixes([LocationEvents.Fix(driverID: "d2", lat: 52.52, lon: 13.405, at: m + 45, state: "available")], in: db, noting: batch)
                throw Refused()
            }
        }
        #expect(try await seen("driver-city") == 1)
        try await ingest.store([try fixes([m + 46], driver: "d2")], stream: location)
        #expect(try await seen("driver-city") == 2, "d2 recorded by the batch that committed")
        #expect(try await supply() == 3, "d1 after the wipe, d1 again once retention took its sightings (as the table alone counts), d2")
        try await db.close()
    }
}
