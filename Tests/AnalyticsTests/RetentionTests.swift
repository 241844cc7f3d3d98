@testable import Analytics
import Contracts
import Foundation
import HailKitTesting
import SQLiteKit
import Testing

@Suite("analytics' retention")
struct RetentionTests {
    @Test("old fixes and old sightings go; recent ones, rollups and orders stay")
    func prune() async throws {
        let folder = try TestEnvironment.temporaryDirectory("analytics-retention")
        let db = try await SQLiteStore.open(
            configuration: SQLiteConfiguration(path: folder + "/analytics.sqlite"), migrations: AnalyticsStore.migrations)
        let store = AnalyticsStore(db: db, grids: try CityGrids(specification: CityGrids.defaultSpecification, edgeMeters: 460))
        let now = Date().timeIntervalSince1970
        let old = ((now - 3 * 86_400) / 60).rounded(.down) * 60, recent = now - 600
        try await db.write { db in
            try store.fixes(
                [old, old + 30, recent].flatMap { at in
                    ["d1", "d2"].map { LocationEvents.Fix(driverID: $0, lat: 52.52, lon: 13.405, at: at, state: "available") }
                }, in: db)
        }
        func count(_ sql: String) async throws -> Int { try await db.read { try Int.fetchOne($0, sql: sql) ?? 0 } }
        #expect(try await count("SELECT COUNT(*) FROM fixes") == 6)
        let supplyBefore = try await count("SELECT SUM(value) FROM counts WHERE metric = 'supply_city'")
        // Fixes kept two days, sightings a day: the old minute's fixes and sightings go.
        let removed = try await store.prune(fixesBefore: now - 2 * 86_400, seenBefore: now - 2 * 86_400)
        #expect(try await count("SELECT COUNT(*) FROM fixes") == 2)
        #expect(try await count("SELECT COUNT(*) FROM fixes WHERE at < \(now - 86_400)") == 0)
        #expect(try await count("SELECT COUNT(*) FROM seen WHERE minute < \(AnalyticsStore.minute(now - 86_400))") == 0)
        #expect(try await count("SELECT COUNT(*) FROM seen") > 0)
        #expect(removed == 4 + 8, "4 fixes, and the old minute's sightings: 2 drivers × (seen, available) × (cell, city)")
        // The figures already counted stay.
        #expect(try await count("SELECT SUM(value) FROM counts WHERE metric = 'supply_city'") == supplyBefore)
        try await db.close()
    }
}
