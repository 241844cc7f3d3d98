import ArgumentParser
import Foundation
import MatchingEngine

/// `matching-bench`: the matching engine's figures on the reference tool's instance files, one JSON
/// object per command, to be read next to `matching_reference.py` run on the same files.
@main
struct MatchingBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matching-bench",
        abstract: "Time Hailstorm's matching engine on dispatch instances (HSMI0001 files).",
        subcommands: [Solve.self, KNearest.self, Updates.self, Cycle.self])
}

struct Solve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Min-cost assignment of every order; time includes building candidates and costs.")

    @Argument(help: "Instance file written by matching_reference.py gen.")
    var file: String

    @Option(help: "exact | fast | greedy | dense")
    var mode: DispatchMode = .exact

    @Option(help: "Candidates per order (default: adapted to the ratio of drivers to orders).")
    var k: Int?

    @Option(help: "Fast mode: maximum pickup distance in km.")
    var maxPickupKm: Double = 5

    @Option(help: "Timed repetitions; the median is reported.")
    var `repeat`: Int = 5

    func run() throws {
        let instance = try Instance(path: file)
        let dispatcher = Dispatcher(configuration: .init(mode: mode, candidates: k, maxPickupKm: maxPickupKm))
        var result: IndexAssignment?
        let times = timed(`repeat`) {
            let snapshot = DriverSnapshot(drivers: instance.driverIDs, positions: instance.drivers)
            result = dispatcher.assign(instance.orders, drivers: snapshot)
        }
        let r = result!
        printJSON([
            "solver": "hailstorm \(mode.rawValue)", "orders": instance.orders.count, "drivers": instance.drivers.count,
            "matched": r.matched, "deferred": instance.orders.count - r.matched, "total_cost_km": r.totalCost,
            "candidate_edges": r.candidateEdges, "solve_rounds": r.solveRounds, "added_edges": r.addedEdges,
            "median_ms": times.median, "min_ms": times.min, "max_ms": times.max,
        ])
    }
}

extension DispatchMode: ExpressibleByArgument {}

struct KNearest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "knn", abstract: "k nearest drivers of every order point, single thread.")

    @Argument(help: "Instance file written by matching_reference.py gen.")
    var file: String

    @Option var k: Int = 10
    @Option var `repeat`: Int = 5

    func run() throws {
        let instance = try Instance(path: file)
        var snapshot: DriverSnapshot?
        let build = timed(1) {
            var index = DriverIndex(
                geometry: GridGeometry(minimum: instance.minimum, maximum: instance.maximum, cellSize: 0.25),
                expectedDrivers: instance.drivers.count)
            for (id, p) in zip(instance.driverIDs, instance.drivers) { index.upsert(id, at: p, availability: .available) }
            snapshot = index.snapshot()
        }
        let grid = snapshot!.grid
        var sum = 0.0
        let times = timed(`repeat`) {
            let lists = grid.nearest(to: instance.orders, k: k)
            sum = lists.distances.reduce(0, +)
        }
        printJSON([
            "solver": "hailstorm grid", "queries": instance.orders.count, "drivers": instance.drivers.count,
            "k": min(k, instance.drivers.count), "sum_of_distances_km": sum, "index_build_ms": build.median,
            "median_ms": times.median, "min_ms": times.min, "max_ms": times.max,
            "queries_per_s": Double(instance.orders.count) / (times.median / 1000),
        ])
    }
}

struct Updates: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Location updates/s of the index next to plain dictionary assignment of the same stream.")

    @Option var drivers: Int = 10_000
    @Option var updates: Int = 5_000_000
    @Option var `repeat`: Int = 5
    @Option(help: "City side in km.") var cityKm: Double = 20

    func run() throws {
        var rng = SplitMix64(seed: 42)
        var positions = (0..<drivers).map { _ in
            PlanePoint(x: rng.uniform(0, cityKm), y: rng.uniform(0, cityKm))
        }
        let start = positions
        // A random walk: each update moves one random driver by up to 60 m, as a 3 s GPS tick would.
        var stream: [(DriverID, PlanePoint)] = []
        stream.reserveCapacity(updates)
        for _ in 0..<updates {
            let d = Int(rng.next() % UInt64(drivers))
            var p = positions[d]
            p.x = min(max(p.x + rng.uniform(-0.06, 0.06), 0), cityKm)
            p.y = min(max(p.y + rng.uniform(-0.06, 0.06), 0), cityKm)
            positions[d] = p
            stream.append((DriverID(UInt64(d) &* 2_654_435_761 &+ 17), p))
        }
        var index = DriverIndex(
            geometry: GridGeometry(minimum: .init(x: 0, y: 0), maximum: .init(x: cityKm, y: cityKm), cellSize: 0.25),
            expectedDrivers: drivers)
        var dictionary: [DriverID: PlanePoint] = [:]
        dictionary.reserveCapacity(drivers)
        for d in 0..<drivers {
            let id = DriverID(UInt64(d) &* 2_654_435_761 &+ 17)
            index.upsert(id, at: start[d], availability: .available)
            dictionary[id] = start[d]
        }
        var check = 0.0
        var indexTimes: [Double] = []
        var dictionaryTimes: [Double] = []
        // Interleave the two so both see the same machine noise.
        for _ in 0..<max(`repeat`, 1) {
            indexTimes.append(timed(1) {
                for (id, p) in stream { index.update(id, to: p) }
            }.median)
            dictionaryTimes.append(timed(1) {
                for (id, p) in stream { dictionary[id] = p }
            }.median)
        }
        check += index.position(of: stream[updates - 1].0)!.x + dictionary[stream[updates - 1].0]!.x
        let indexRate = Double(updates) / (median(indexTimes) / 1000)
        let dictionaryRate = Double(updates) / (median(dictionaryTimes) / 1000)
        printJSON([
            "drivers": drivers, "updates": updates, "updates_per_s": indexRate,
            "dictionary_updates_per_s": dictionaryRate, "ratio": indexRate / dictionaryRate,
            "checksum": check,
        ])
    }
}

struct Cycle: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Whole dispatch windows (snapshot → candidates → solve → claims) while locations stream in.")

    @Option var orders: Int = 2000
    @Option var drivers: Int = 10_000
    @Option(help: "Location updates per second applied by another thread during the run.")
    var updateRate: Int = 250_000
    @Option var windows: Int = 50
    @Option var mode: DispatchMode = .exact
    @Option var cityKm: Double = 20

    func run() throws {
        var rng = SplitMix64(seed: 7)
        let city = cityKm
        var index = DriverIndex(
            geometry: GridGeometry(minimum: .init(x: 0, y: 0), maximum: .init(x: city, y: city), cellSize: 0.4),
            expectedDrivers: drivers)
        var positions: [PlanePoint] = []
        for d in 0..<drivers {
            let p = PlanePoint(x: rng.uniform(0, city), y: rng.uniform(0, city))
            positions.append(p)
            index.upsert(DriverID(UInt64(d)), at: p, availability: .available)
        }
        let live = LiveDriverIndex(index)
        let claims = DispatchClaims()
        let dispatcher = Dispatcher(configuration: .init(mode: mode))
        let updater = UpdateStream(live: live, positions: positions, rate: updateRate, city: city)
        updater.start()

        var times: [Double] = []
        var assigned = 0
        var nextOrder: UInt64 = 0
        for _ in 0..<windows {
            let batch = (0..<orders).map { _ in
                nextOrder += 1
                return DispatchOrder(id: OrderID(nextOrder), pickup: PlanePoint(x: rng.uniform(0, city), y: rng.uniform(0, city)))
            }
            let t0 = DispatchTime.now().uptimeNanoseconds
            let snapshot = live.snapshot()
            let result = dispatcher.dispatch(batch, drivers: snapshot)
            let outcomes = live.commit(result.assignments, claims: claims)
            let t1 = DispatchTime.now().uptimeNanoseconds
            times.append(Double(t1 - t0) / 1e6)
            assigned += outcomes.count { $0 == .claimed }
            // The window's trips end before the next one: its drivers come back.
            for a in result.assignments where claims.release(order: a.order) != nil {
                live.setAvailability(a.driver, .available)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        let applied = updater.stop()
        times.sort()
        printJSON([
            "orders": orders, "drivers": drivers, "windows": windows, "mode": mode.rawValue,
            "update_rate_target": updateRate, "updates_applied_per_s": applied,
            "assigned_per_window": Double(assigned) / Double(windows),
            "p50_ms": percentile(times, 0.50), "p99_ms": percentile(times, 0.99), "max_ms": times.last ?? 0,
        ])
    }
}

/// A thread that moves random drivers at a fixed rate, in batches every millisecond.
final class UpdateStream: @unchecked Sendable {
    // Safe: `positions` and `rng` are touched only by the update thread; `running` and `applied` are
    // guarded by `lock`.
    private let live: LiveDriverIndex
    private var positions: [PlanePoint]
    private let rate: Int
    private let city: Double
    private let lock = NSLock()
    private var running = true
    private var applied = 0
    private var elapsed = 0.0
    private let finished = DispatchSemaphore(value: 0)

    init(live: LiveDriverIndex, positions: [PlanePoint], rate: Int, city: Double) {
        self.live = live
        self.positions = positions
        self.rate = rate
        self.city = city
    }

    func start() {
        let thread = Thread { [self] in loop() }
        thread.start()
    }

    private func loop() {
        var rng = SplitMix64(seed: 99)
        let begin = DispatchTime.now().uptimeNanoseconds
        var done = 0
        var batch: [(DriverID, PlanePoint)] = []
        while lock.withLock({ running }) {
            let now = DispatchTime.now().uptimeNanoseconds
            let due = Int(Double(now - begin) / 1e9 * Double(rate))
            if due > done {
                batch.removeAll(keepingCapacity: true)
                for _ in 0..<min(due - done, 20_000) {
                    let d = Int(rng.next() % UInt64(positions.count))
                    var p = positions[d]
                    p.x = min(max(p.x + rng.uniform(-0.06, 0.06), 0), city)
                    p.y = min(max(p.y + rng.uniform(-0.06, 0.06), 0), city)
                    positions[d] = p
                    batch.append((DriverID(UInt64(d)), p))
                }
                live.apply(batch)
                done += batch.count
            } else {
                usleep(500)
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9
        lock.withLock { applied = done; elapsed = seconds }
        finished.signal()
    }

    /// Stops the thread; returns the updates per second it applied.
    func stop() -> Double {
        lock.withLock { running = false }
        finished.wait()
        return lock.withLock { Double(applied) / elapsed }
    }
}

/// An instance file of `matching_reference.py`: magic `HSMI0001`, order and driver counts (uint32), then
/// the points as little-endian float64 pairs in km.
struct Instance {
    var orders: [PlanePoint]
    var drivers: [PlanePoint]
    var driverIDs: [DriverID]
    var minimum: PlanePoint
    var maximum: PlanePoint

    init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(path)")
        }
        let bytes = [UInt8](data)
        guard bytes.count >= 16, Array(bytes[0..<8]) == Array("HSMI0001".utf8) else {
            throw ValidationError("\(path): not a Hailstorm matching instance (bad magic)")
        }
        func u32(_ at: Int) -> Int {
            Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24
        }
        let n = u32(8), m = u32(12)
        guard bytes.count == 16 + 16 * (n + m) else {
            throw ValidationError("\(path): truncated instance: expected \(16 + 16 * (n + m)) bytes, found \(bytes.count)")
        }
        func f64(_ at: Int) -> Double {
            var bits: UInt64 = 0
            for b in 0..<8 { bits |= UInt64(bytes[at + b]) << (8 * UInt64(b)) }
            return Double(bitPattern: bits)
        }
        var points: [PlanePoint] = []
        points.reserveCapacity(n + m)
        for i in 0..<(n + m) { points.append(PlanePoint(x: f64(16 + 16 * i), y: f64(24 + 16 * i))) }
        orders = Array(points[0..<n])
        drivers = Array(points[n...])
        driverIDs = (0..<m).map { DriverID(UInt64($0)) }
        var lo = PlanePoint(x: .infinity, y: .infinity), hi = PlanePoint(x: -.infinity, y: -.infinity)
        for p in points {
            lo.x = min(lo.x, p.x); lo.y = min(lo.y, p.y)
            hi.x = max(hi.x, p.x); hi.y = max(hi.y, p.y)
        }
        minimum = lo
        maximum = hi
    }
}

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
        lo + (hi - lo) * Double(next() >> 11) / Double(1 << 53)
    }
}

struct Timings {
    var median: Double
    var min: Double
    var max: Double
}

func timed(_ times: Int, _ body: () -> Void) -> Timings {
    var samples: [Double] = []
    for _ in 0..<max(times, 1) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
    }
    return Timings(median: median(samples), min: samples.min()!, max: samples.max()!)
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let rank = Int((p * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

func printJSON(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}
