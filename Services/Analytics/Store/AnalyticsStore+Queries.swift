import Contracts
import Foundation
import SQLiteKit

/// A range of whole minutes: `from` rounded down, `to` rounded up.
struct MinuteRange: Sendable {
    let from: Double
    let to: Double
    var first: Int { AnalyticsStore.minute(from) }
    var end: Int { Int((to / 60).rounded(.up)) }
    var minutes: Int { max(1, end - first) }
}

extension AnalyticsStore {
    /// The figures over a range and per step (60 or 3600 seconds), for the platform, a city or a cell.
    func kpis(_ range: MinuteRange, step: Int, city: String?, cell: String?) async throws -> (total: AnalyticsAPI.Figures, steps: [AnalyticsAPI.KPIStep]) {
        let stepMinutes = step / 60
        let first = range.first, end = range.end
        let place = (city == nil ? "" : " AND city = ?") + (cell == nil ? "" : " AND cell = ?")
        // A cell's active people are counted from its own rows; a city's (or the platform's) from the rows
        // kept once per person, city and minute.
        let kinds = cell == nil ? "'rider-city', 'driver-city'" : "'rider', 'driver'"
        let placeValues = [first.databaseValue, end.databaseValue] + [city, cell].compactMap { $0?.databaseValue }
        return try await db.read { db in
            var sums: [Int: [String: Int]] = [:]
            var total: [String: Int] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT metric, minute, SUM(value) AS value FROM counts WHERE minute >= ? AND minute < ?\(place) GROUP BY metric, minute",
                arguments: Self.arguments(placeValues))
            {
                let metric: String = row["metric"], minute: Int = row["minute"], value: Int = row["value"]
                let slot = first + (minute - first) / stepMinutes * stepMinutes
                sums[slot, default: [:]][metric, default: 0] += value
                total[metric, default: 0] += value
            }
            var spans: [Int: [String: [Int: Int]]] = [:]
            var spanTotal: [String: [Int: Int]] = [:]
            for row in try Row.fetchAll(
                db,
                sql: "SELECT span, minute, bucket, SUM(count) AS count FROM histograms WHERE minute >= ? AND minute < ?\(place) GROUP BY span, minute, bucket",
                arguments: Self.arguments(placeValues))
            {
                let span: String = row["span"], minute: Int = row["minute"], bucket: Int = row["bucket"], count: Int = row["count"]
                let slot = first + (minute - first) / stepMinutes * stepMinutes
                spans[slot, default: [:]][span, default: [:]][bucket, default: 0] += count
                spanTotal[span, default: [:]][bucket, default: 0] += count
            }
            var active: [Int: [String: Int]] = [:]
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT kind, (minute - ?) / ? AS slot, COUNT(DISTINCT id) AS n FROM seen
                    WHERE kind IN (\(kinds)) AND minute >= ? AND minute < ?\(place) GROUP BY kind, slot
                    """,
                arguments: Self.arguments([first.databaseValue, stepMinutes.databaseValue] + placeValues))
            {
                let slot = first + (row["slot"] as Int) * stepMinutes
                active[slot, default: [:]][Self.person(row["kind"])] = row["n"]
            }
            var activeTotal: [String: Int] = [:]
            for row in try Row.fetchAll(
                db,
                sql: "SELECT kind, COUNT(DISTINCT id) AS n FROM seen WHERE kind IN (\(kinds)) AND minute >= ? AND minute < ?\(place) GROUP BY kind",
                arguments: Self.arguments(placeValues))
            {
                activeTotal[Self.person(row["kind"])] = row["n"]
            }
            var steps: [AnalyticsAPI.KPIStep] = []
            var slot = first
            while slot < end {
                let minutes = min(stepMinutes, end - slot)
                steps.append(AnalyticsAPI.KPIStep(
                    start: Double(slot * 60),
                    figures: Self.figures(
                        sums[slot] ?? [:], spans: spans[slot] ?? [:], active: active[slot] ?? [:], minutes: minutes, inCell: cell != nil)))
                slot += stepMinutes
            }
            return (Self.figures(total, spans: spanTotal, active: activeTotal, minutes: range.minutes, inCell: cell != nil), steps)
        }
    }

    /// `inCell`: the figures of one cell, whose supply is its own driver-minutes; a city's counts each
    /// driver once a minute wherever in the city it was.
    static func figures(
        _ sums: [String: Int], spans: [String: [Int: Int]], active: [String: Int], minutes: Int, inCell: Bool
    ) -> AnalyticsAPI.Figures {
        func value(_ metric: Metric) -> Int { sums[metric.rawValue] ?? 0 }
        var figures = AnalyticsAPI.Figures()
        figures.quotes = value(.quotes)
        figures.orders = value(.orders)
        figures.quoteConversion = figures.quotes > 0 ? Double(figures.orders) / Double(figures.quotes) : nil
        figures.offered = value(.offered)
        figures.assigned = value(.assigned)
        figures.matchRate = figures.orders > 0 ? Double(figures.assigned) / Double(figures.orders) : nil
        figures.timeToAssign = spans[Span.timeToAssign.rawValue].flatMap(DurationBuckets.percentiles)
        figures.pickupTime = spans[Span.pickupTime.rawValue].flatMap(DurationBuckets.percentiles)
        figures.tripTime = spans[Span.tripTime.rawValue].flatMap(DurationBuckets.percentiles)
        figures.cancellations.total = value(.cancelled)
        figures.cancellations.byRider = value(.cancelledByRider)
        figures.cancellations.byDriver = value(.cancelledByDriver)
        figures.cancellations.byPlatform = value(.cancelledByPlatform)
        for state in ["created", "offered", "assigned", "arriving"] {
            if let count = sums[Metric.cancelledIn(state)], count > 0 { figures.cancellations.inState[state] = count }
        }
        figures.expired = value(.expired)
        figures.completed = value(.completed)
        figures.paid = value(.paid)
        figures.gmvCents = value(.gmv)
        figures.couponSubsidyCents = value(.subsidy)
        figures.commissionCents = value(.commission)
        figures.activeRiders = active["rider"] ?? 0
        figures.activeDrivers = active["driver"] ?? 0
        figures.supply = (Double(value(inCell ? .supply : .supplyCity)) / Double(max(1, minutes)) * 100).rounded() / 100
        figures.demand = value(.orders)
        figures.ordersUnderSurge = value(.surgeOrders)
        figures.surgeShare = figures.orders > 0 ? Double(figures.ordersUnderSurge) / Double(figures.orders) : nil
        figures.couponClaims = value(.couponClaims)
        figures.adImpressions = value(.adImpressions)
        figures.adClicks = value(.adClicks)
        figures.adSpendMillicents = value(.adSpend)
        return figures
    }

    /// Statement arguments from values, the absent ones left out (they go with filters not applied).
    static func arguments(_ values: [DatabaseValue?]) -> StatementArguments {
        StatementArguments(values.compactMap { $0 }.map { $0 as (any DatabaseValueConvertible)? })
    }

    /// `rider` for `rider` and `rider-city`.
    static func person(_ kind: String) -> String { kind.hasPrefix("rider") ? "rider" : "driver" }

    static let funnelSteps = ["offered", "assigned", "arriving", "in_trip", "completed", "paid"]

    /// Quotes given in the range, the orders created in it, and how many of those reached each state.
    func funnel(_ range: MinuteRange, city: String?) async throws -> [AnalyticsAPI.FunnelStep] {
        try await db.read { db in
            let cityFilter = city == nil ? "" : " AND city = ?"
            let quotes = try Int.fetchOne(
                db, sql: "SELECT coalesce(SUM(value), 0) FROM counts WHERE metric = 'quotes' AND minute >= ? AND minute < ?\(cityFilter)",
                arguments: Self.arguments([range.first.databaseValue, range.end.databaseValue, city?.databaseValue])) ?? 0
            let cohort = "FROM orders WHERE created_at >= ? AND created_at < ?\(cityFilter)"
            let cohortArguments = Self.arguments([range.from.databaseValue, range.to.databaseValue, city?.databaseValue])
            let orders = try Int.fetchOne(db, sql: "SELECT COUNT(*) \(cohort)", arguments: cohortArguments) ?? 0
            var reached: [String: Int] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT state, COUNT(*) AS n FROM order_states WHERE order_id IN (SELECT id \(cohort)) GROUP BY state",
                arguments: cohortArguments)
            {
                reached[row["state"]] = row["n"]
            }
            var steps = [AnalyticsAPI.FunnelStep(step: "quote", count: quotes, dropOff: nil)]
            for (name, count) in [("order", orders)] + Self.funnelSteps.map({ ($0, reached[$0] ?? 0) }) {
                let before = steps.last!.count
                steps.append(AnalyticsAPI.FunnelStep(
                    step: name, count: count, dropOff: before > 0 ? max(0, Double(before - count) / Double(before)) : nil))
            }
            return steps
        }
    }

    /// The value of each cell over the range: a sum of `metric`, or for supply the average number of
    /// available drivers.
    func heatmap(_ range: MinuteRange, metric: Metric, city: String?) async throws -> [AnalyticsAPI.CellValue] {
        try await db.read { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT city, cell, SUM(value) AS value FROM counts
                    WHERE metric = ? AND minute >= ? AND minute < ? AND cell != ''\(city == nil ? "" : " AND city = ?") GROUP BY city, cell
                    """,
                arguments: Self.arguments([metric.rawValue.databaseValue, range.first.databaseValue, range.end.databaseValue, city?.databaseValue]))
            return rows.map { row in
                let value = Double(row["value"] as Int)
                return AnalyticsAPI.CellValue(
                    cell: row["cell"], city: row["city"],
                    value: metric == .supply ? (value / Double(range.minutes) * 100).rounded() / 100 : value)
            }
        }
    }

    /// The busiest pickup → drop-off cell pairs of the orders created in the range.
    func flows(_ range: MinuteRange, top: Int) async throws -> [(city: String, from: String, to: String, trips: Int)] {
        try await db.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT city, cell, dropoff_cell, COUNT(*) AS n FROM orders
                    WHERE created_at >= ? AND created_at < ? AND cell IS NOT NULL AND dropoff_cell IS NOT NULL
                    GROUP BY city, cell, dropoff_cell ORDER BY n DESC, cell, dropoff_cell LIMIT ?
                    """,
                arguments: [range.from, range.to, top]
            ).map { ($0["city"], $0["cell"], $0["dropoff_cell"], $0["n"]) }
        }
    }

    /// Flagged trips completed in the range, oldest first, at most `limit`.
    func anomalies(from: Double, to: Double, limit: Int) async throws -> [AnalyticsAPI.TripAnalysis] {
        let texts = try await db.read { db in
            try String.fetchAll(
                db,
                sql: "SELECT analysis FROM trip_paths WHERE flagged = 1 AND completed_at >= ? AND completed_at < ? ORDER BY completed_at LIMIT ?",
                arguments: [from, to, limit])
        }
        let decoder = JSONDecoder()
        return try texts.map { try decoder.decode(AnalyticsAPI.TripAnalysis.self, from: Data($0.utf8)) }
    }

    /// Forgets drivers' fixes from before `fixesBefore` (trips analysed by then keep their analysis) and
    /// who was seen where before `seenBefore`, which must not be later than `fixesBefore` (the drivers
    /// whose fixes go are found from the minutes they were seen in). Returns the rows removed.
    func prune(fixesBefore: Double, seenBefore: Double) async throws -> Int {
        try await db.write { db in
            var removed = 0
            let drivers = try String.fetchAll(
                db, sql: "SELECT DISTINCT id FROM seen WHERE kind = 'driver-city' AND minute < ?", arguments: [Self.minute(fixesBefore)])
            for driver in drivers {
                try db.cachedStatement(sql: "DELETE FROM fixes WHERE driver_id = ? AND at < ?").execute(arguments: [driver, fixesBefore])
                removed += db.changesCount
            }
            for kind in ["rider", "driver", "available", "rider-city", "driver-city", "available-city"] {
                try db.execute(sql: "DELETE FROM seen WHERE kind = ? AND minute < ?", arguments: [kind, Self.minute(seenBefore)])
                removed += db.changesCount
            }
            return removed
        }
    }

    /// Empties every table of facts and rollups (for `rebuild`).
    /// Empties every table of facts and rollups (for `rebuild`) and marks the rebuild as under way, in
    /// one transaction.
    func wipe() async throws {
        try await db.write { db in
            for table in Self.derivedTables { try db.execute(sql: "DELETE FROM \(table)") }
            try db.execute(sql: "DELETE FROM rebuilding")
            try db.execute(sql: "INSERT INTO rebuilding (started_at) VALUES (?)", arguments: [Date().timeIntervalSince1970])
        }
    }

    /// The rebuild is done: its mark goes.
    func rebuilt() async throws {
        try await db.write { db in try db.execute(sql: "DELETE FROM rebuilding") }
    }

    /// Whether a rebuild began and never finished.
    func isRebuilding() async throws -> Bool {
        try await db.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM rebuilding)") ?? false }
    }
}
