import Contracts
import Foundation
import HailKit
import Histogram
import NIOCore
import NIOPosix
import RedisKit
import Synchronization

/// A load scenario: what it sets up, what one scheduled request is, and how it audits the system's own
/// state afterwards.
protocol Scenario: Sendable {
    var name: String { get }
    func prepare() async throws
    /// The scheduled request number `index`, due in second `second` of the run.
    func request(_ index: Int, second: Int) async -> (endpoint: String, outcome: Outcome)
    /// The same request sent on `loop`, its answer handed to `done` there, without a task, for a scenario
    /// whose request is one call to a plain-http gateway; false (nothing sent) to have `request` run as a
    /// task.
    func submit(_ index: Int, second: Int, on loop: any EventLoop, _ done: @escaping @Sendable (OpenLoop.Answer) -> Void) -> Bool
    /// Stops what runs beside the schedule and waits for the system to settle.
    func finish() async
    func audit() async throws -> [AuditCheck]
    /// Figures beyond request latency (order-to-assignment latency), in milliseconds.
    func figures() -> [String: [String: Double]]
}

extension Scenario {
    func submit(_ index: Int, second: Int, on loop: any EventLoop, _ done: @escaping @Sendable (OpenLoop.Answer) -> Void) -> Bool {
        false
    }
}

// MARK: Flash sale

/// A campaign of `coupons` coupons opening as the run starts; each scheduled request is a claim by one
/// of `riders` riders (a rider may press again: the limit of one answers it).
///
/// With a waiting room of W seconds the campaign is announced W seconds before it opens, and in them every
/// rider opens its page once (`GET /coupons/campaigns/{id}` through the gateway, not measured), as riders
/// of a real sale sit on the countdown: the platform has seen their tokens and holds their connections
/// when the button goes live. Without one (the default), the sale opens as the run starts to riders the
/// platform has never seen, every first claim paying for its token's signature check.
final class FlashSaleScenario: Scenario {
    let name = "flash-sale"
    let context: LoadContext
    let coupons: Int
    let riderCount: Int
    let waitingRoom: Double
    /// The campaign, the riders, each rider's claim as the bytes of its request (made once, before the
    /// sale opens), and the claims granted.
    private let state = Mutex<(campaign: String, riders: [(id: String, token: String)], claims: [ByteBuffer], granted: Int)>(("", [], [], 0))

    init(context: LoadContext, coupons: Int, riders: Int, waitingRoom: Double = 0) {
        self.context = context
        self.coupons = coupons
        self.riderCount = riders
        self.waitingRoom = waitingRoom
    }

    func prepare() async throws {
        let riders = try await context.accounts(riderCount, role: .rider, prefix: "load-rider")
        let now = Date().timeIntervalSince1970
        let opensAt = waitingRoom > 0 ? now + waitingRoom : now - 1
        let body = try JSONSerialization.data(withJSONObject: [
            "name": "Load flash sale \(context.runLabel)", "city": "Berlin", "kind": "amount", "amountOffCents": 300,
            "minimumFareCents": 0, "stock": coupons, "perUserLimit": 1, "startsAt": opensAt, "endsAt": now + 3 * 3600,
        ])
        guard let reply = await context.call(.POST, "/admin/coupons/campaigns", token: context.admin, json: body, idempotencyKey: context.runLabel),
            reply.status == 201, let id = reply.json["id"] as? String
        else { throw LoadError("the campaign was not created") }
        let claims = context.lane.map { lane in
            riders.map { lane.request(.POST, "/api/v1/coupons/campaigns/\(id)/claim", token: $0.token) }
        } ?? []
        state.withLock { $0 = (id, riders, claims, 0) }
        if waitingRoom > 0 { try await wait(riders, campaign: id, opensAt: opensAt) }
    }

    /// Every rider opens the campaign's page once, the riders arriving evenly over the first nine tenths of
    /// the wait (at most `parallel` pages loading at once), then the sale waits for its opening time. A
    /// page that does not load stops the run: the sale would not be the one described.
    private func wait(_ riders: [(id: String, token: String)], campaign: String, opensAt: Double, parallel: Int = 256) async throws {
        let started = ContinuousClock.now
        let spread = max(0, opensAt - Date().timeIntervalSince1970) * 0.9
        // The last riders all come at once, as a countdown's last seconds bring everyone back to the page.
        let paced = riders.count - min(riders.count / 10, 2 * parallel)
        let failed = await withTaskGroup(of: Int.self) { group in
            var failed = 0
            var loading = 0
            for (index, rider) in riders.enumerated() {
                let due = started + .milliseconds(Int(spread * 1000 * Double(min(index, paced)) / Double(max(paced, 1))))
                if due > .now { try? await Task.sleep(until: due) }
                if loading == parallel, let outcome = await group.next() {
                    failed += outcome
                    loading -= 1
                }
                loading += 1
                group.addTask {
                    let reply = await self.context.call(.GET, "/coupons/campaigns/\(campaign)", token: rider.token)
                    return reply?.status == 200 ? 0 : 1
                }
            }
            for await outcome in group { failed += outcome }
            return failed
        }
        guard failed == 0 else { throw LoadError("\(failed) of \(riders.count) riders could not open the campaign's page") }
        let took = (ContinuousClock.now - started).secondsValue
        let left = opensAt - Date().timeIntervalSince1970
        FileHandle.standardError.write(Data(String(
            format: "waiting room: %d riders opened the campaign's page over %.1f s; %@\n", riders.count, took,
            left > 0 ? String(format: "the sale opens in %.1f s", left) : String(format: "the sale opened %.1f s before they were all in", -left)
        ).utf8))
        if left > 0 { try await Task.sleep(for: .milliseconds(Int(left * 1000) + 20)) }
    }

    func request(_ index: Int, second: Int) async -> (endpoint: String, outcome: Outcome) {
        let (campaign, rider) = state.withLock { ($0.campaign, $0.riders[Int.random(in: 0..<$0.riders.count)]) }
        return answered(await context.call(.POST, "/coupons/campaigns/\(campaign)/claim", token: rider.token))
    }

    func submit(_ index: Int, second: Int, on loop: any EventLoop, _ done: @escaping @Sendable (OpenLoop.Answer) -> Void) -> Bool {
        guard let claim = state.withLock({ $0.claims.isEmpty ? nil : $0.claims[Int.random(in: 0..<$0.claims.count)] }) else {
            return false
        }
        return context.send(claim, on: loop) { done(self.answered($0)) }
    }

    private func answered(_ reply: LoadContext.Reply?) -> (endpoint: String, outcome: Outcome) {
        if reply?.status == 201 { state.withLock { $0.granted += 1 } }
        return ("POST /coupons/campaigns/{id}/claim", LoadContext.outcome(reply, expected: [201], allowedProblems: ["sold-out", "limit-reached"], label: "granted"))
    }

    func finish() async {}

    func audit() async throws -> [AuditCheck] {
        let (campaign, answered201) = state.withLock { ($0.campaign, $0.granted) }
        // The claims stream drains into SQLite at the database's pace: wait for it.
        var audit: [String: Any] = [:]
        let deadline = ContinuousClock.now + .seconds(60)
        repeat {
            guard let reply = await context.read("/admin/coupons/campaigns/\(campaign)/audit"), reply.status == 200 else {
                throw LoadError("the coupon audit did not answer")
            }
            audit = reply.json
            if audit["pendingOnStream"] as? Int == 0 { break }
            try await Task.sleep(for: .milliseconds(500))
        } while ContinuousClock.now < deadline
        let granted = audit["granted"] as? Int ?? -1
        let persisted = audit["persisted"] as? Int ?? -1
        let over = (audit["overLimitUsers"] as? [String]) ?? ["?"]
        return [
            AuditCheck(name: "claims ≤ stock", passed: granted >= 0 && granted <= coupons, detail: "\(granted) granted of \(coupons)"),
            AuditCheck(name: "each granted claim persisted", passed: persisted == granted, detail: "\(persisted) in SQLite, \(granted) granted by Redis"),
            AuditCheck(name: "no rider beyond the limit of 1", passed: over.isEmpty, detail: over.isEmpty ? "none" : "\(over.count) riders"),
            AuditCheck(
                name: "every 201 answered is a granted claim", passed: answered201 <= granted,
                detail: "\(answered201) riders were told granted; Redis granted \(granted)"),
        ]
    }

    func figures() -> [String: [String: Double]] { [:] }
}

// MARK: Rides (rush hour, grab storm)

/// Ride requests against simulated drivers: `drivers` drivers online around the city (within `spread`
/// degrees of `centre`), each sending a fix every `fixSeconds`; each scheduled request is a rider's order
/// (assign, offer, or alternating). The order stream is watched (read-only) to play the drivers' part:
/// the offered drivers all grab at once, the assigned driver drives the trip to the end — so drivers come
/// free again, as in a city.
final class RideScenario: Scenario {
    let name: String
    let context: LoadContext
    let driverCount: Int
    let spread: Double
    let pickupSpread: Double
    let dispatch: [OrderAPI.Dispatch]
    let fixSeconds: Double
    static let centre = GeoPoint(lat: 52.52, lon: 13.405)

    private struct Tracked {
        var createdAt: Double?
        var dispatch: OrderAPI.Dispatch?
        var assignedAt: Double?
        var assignments = 0
        var driver: String?
        var state: OrderState = .created
    }
    private let drivers = Mutex<[String: String]>([:])
    /// Drivers grabbing or driving now: a simulated driver grabs one offer at a time, as a person would.
    private let busy = Mutex<Set<String>>([])
    /// Drivers on a trip now (a subset of `busy`): a grab lost meanwhile does not make them free, or they
    /// would grab other offers mid-trip (and be refused as `driver-busy`).
    private let driving = Mutex<Set<String>>([])
    /// Offers a driver was sent while busy (grabbing another order, or on a trip), by driver. Once free,
    /// the driver goes through them and grabs the first still open, as a driver's app lists the offers
    /// that stand: an offer is not lost on a driver who was busy for the moment it arrived.
    private let standing = Mutex<[String: [String]]>([:])
    private let driverList = Mutex<[(id: String, token: String)]>([])
    private let riders = Mutex<[(id: String, token: String)]>([])
    private let accepted = Mutex<[String: Tracked]>([:])
    private let stopping = Atomic<Bool>(false)
    private let background = Mutex<[Task<Void, Never>]>([])
    private let start = ContinuousClock.now

    init(name: String, context: LoadContext, drivers: Int, spread: Double, pickupSpread: Double, dispatch: [OrderAPI.Dispatch], fixSeconds: Double) {
        self.name = name
        self.context = context
        self.driverCount = drivers
        self.spread = spread
        self.pickupSpread = pickupSpread
        self.dispatch = dispatch
        self.fixSeconds = fixSeconds
    }

    private func near(_ spread: Double) -> GeoPoint {
        GeoPoint(lat: Self.centre.lat + Double.random(in: -spread...spread), lon: Self.centre.lon + Double.random(in: -spread...spread) * 1.6)
    }

    func prepare() async throws {
        let driverAccounts = try await context.accounts(driverCount, role: .driver, prefix: "load-\(name)-driver")
        let riderAccounts = try await context.accounts(max(100, driverCount), role: .rider, prefix: "load-\(name)-rider")
        riders.withLock { $0 = riderAccounts }
        driverList.withLock { $0 = driverAccounts }
        drivers.withLock { map in for driver in driverAccounts { map[driver.id] = driver.token } }
        // Every driver online, 64 at a time.
        let failures = SharedCount()
        await withTaskGroup(of: Void.self) { group in
            for (index, driver) in driverAccounts.enumerated() {
                if index >= 64 { await group.next() }
                group.addTask {
                    let point = self.near(self.spread)
                    let body = try? JSONSerialization.data(withJSONObject: ["lat": point.lat, "lon": point.lon])
                    let reply = await self.context.call(.POST, "/driver/online", token: driver.token, json: body)
                    if reply?.status != 200 { failures.add(1) }
                }
            }
        }
        guard failures.value == 0 else {
            throw LoadError("\(failures.value) of \(driverCount) drivers could not go online")
        }
        let home = LoopTaskExecutor(OpenLoop.home)
        let watcher = Task(executorPreference: home) { await self.watch() }
        let fixes = Task(executorPreference: home) { await self.sendFixes(on: OpenLoop.home) }
        background.withLock { $0 = [watcher, fixes] }
    }

    func request(_ index: Int, second: Int) async -> (endpoint: String, outcome: Outcome) {
        let rider = riders.withLock { $0[index % $0.count] }
        let mode = dispatch[index % dispatch.count]
        let (pickup, dropoff) = (near(pickupSpread), near(0.05))
        let body = Data(#"{"pickup":\#(Self.json(pickup)),"dropoff":\#(Self.json(dropoff)),"dispatch":"\#(mode.rawValue)"}"#.utf8)
        let reply = await context.call(.POST, "/rides", token: rider.token, json: body, idempotencyKey: "\(context.runLabel)-\(name)-\(index)")
        if let reply, reply.status == 201, let id = reply.string(named: "id") {
            let createdAt = reply.number(named: "createdAt")
            accepted.withLock { orders in
                var tracked = orders[id] ?? Tracked()
                tracked.createdAt = tracked.createdAt ?? createdAt
                tracked.dispatch = mode
                orders[id] = tracked
            }
        }
        return ("POST /rides", LoadContext.outcome(reply, expected: [201], label: "created"))
    }

    /// Reads `events:order` from where it stood at the start: offers trigger grabs, assignments trips.
    /// It and the grabs and trips it starts run on the generator's home loop (where their requests'
    /// connections are): on Swift's shared pool each request crossed threads twice, and thread switches
    /// were a sixth of the generator's rush hour.
    private func watch() async {
        let home = LoopTaskExecutor(OpenLoop.home)
        guard let redis = context.redis else { return }
        let stream = "events:order"
        var last = (try? await redis.send(RedisCommand("XREVRANGE", stream, "+", "-", "COUNT", 1)))?.array?.first?.array?.first?.string ?? "0-0"
        while !Task.isCancelled {
            guard let entries = try? await redis.xrange(stream, start: "(" + last, count: 500), !entries.isEmpty else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            last = entries.last?.id ?? last
            for entry in entries {
                guard let type = entry.string("type"), type != OrderEvents.Created.type, let payload = entry.fields["payload"],
                    let moved = payload.withUnsafeBytes({ PlainJSON.read(OrderEvents.Moved.self, from: $0) })
                        ?? (try? JSONDecoder().decode(OrderEvents.Moved.self, from: Data(payload)))
                else { continue }
                let known = accepted.withLock { orders -> Bool in
                    guard var tracked = orders[moved.orderID] else {
                        // An event can outrun the 201 it belongs to; keep it until the order is known.
                        var tracked = Tracked()
                        tracked.state = moved.to
                        if moved.to == .assigned { tracked.assignments = 1; tracked.assignedAt = moved.at; tracked.driver = moved.driverID }
                        orders[moved.orderID] = tracked
                        return moved.to == .assigned || moved.to == .offered
                    }
                    tracked.state = moved.to
                    if moved.to == .assigned {
                        tracked.assignments += 1
                        tracked.assignedAt = tracked.assignedAt ?? moved.at
                        tracked.driver = moved.driverID
                    }
                    orders[moved.orderID] = tracked
                    return true
                }
                guard known, !stopping.load(ordering: .relaxed) else { continue }
                let second = Int((ContinuousClock.now - start).secondsValue)
                if moved.to == .offered, moved.reason?.hasPrefix("offered to") == true, let offered = moved.offeredTo {
                    Task(executorPreference: home) { await self.grabStorm(moved.orderID, drivers: offered, second: second) }
                } else if moved.to == .assigned, let driver = moved.driverID {
                    Task(executorPreference: home) { await self.drive(moved.orderID, driver: driver, second: second) }
                }
            }
        }
    }

    /// Every free offered driver grabs at the same moment; one wins (and stays taken until its trip ends).
    /// The busy ones keep the offer for when they are free.
    private func grabStorm(_ order: String, drivers offered: [String], second: Int) async {
        // Under the one lock that frees drivers: a busy driver's offer stands before that driver can be
        // freed, so `freed` finds it (kept apart, a grab lost in between freed the driver to an empty list,
        // and the offer waited for its lapse).
        let free = busy.withLock { taken in
            let free = offered.filter { taken.insert($0).inserted }
            let freeSet = Set(free)
            standing.withLock { standing in
                for driver in offered where !freeSet.contains(driver) { standing[driver, default: []].append(order) }
            }
            return free
        }
        await withTaskGroup(of: Void.self) { group in
            for driver in free {
                group.addTask {
                    if await self.grab(order, driver: driver, second: second) { return }
                    guard self.release(driver) else { return }
                    await self.freed(driver, second: second)
                }
            }
        }
    }

    /// One driver's grab; true when they won.
    private func grab(_ order: String, driver: String, second: Int) async -> Bool {
        guard let token = drivers.withLock({ $0[driver] }) else { return false }
        var won = false
        await context.recorded("POST /driver/offers/{id}/grab", second: second) {
            let reply = await self.context.call(.POST, "/driver/offers/\(order)/grab", token: token)
            won = reply?.status == 200
            return LoadContext.outcome(
                reply, expected: [200], allowedProblems: ["taken", "order-closed", "offer-ended", "driver-busy"], label: "won")
        }
        return won
    }

    /// A driver is free again: they grab the first of their standing offers whose order is still offered.
    private func freed(_ driver: String, second: Int) async {
        while !stopping.load(ordering: .relaxed) {
            let list = standing.withLock { $0.removeValue(forKey: driver) } ?? []
            guard !list.isEmpty else { return }
            var rest = list[...]
            var open: String?
            while let order = rest.popFirst() {
                if accepted.withLock({ $0[order]?.state == .offered }) {
                    open = order
                    break
                }
            }
            guard let order = open else { return }
            guard busy.withLock({ $0.insert(driver).inserted }) else {
                // Taken meanwhile (an assignment): the offer stands for when they are free again.
                rest.insert(order, at: rest.startIndex)
                standing.withLock { $0[driver, default: []].insert(contentsOf: rest, at: 0) }
                return
            }
            if !rest.isEmpty { standing.withLock { $0[driver, default: []].insert(contentsOf: rest, at: 0) } }
            if await grab(order, driver: driver, second: second) { return }
            guard release(driver) else { return }
        }
    }

    /// The assigned driver arrives, starts and completes at once (a trip in fast forward) and is free again.
    private func drive(_ order: String, driver: String, second: Int) async {
        guard let token = drivers.withLock({ $0[driver] }) else { return }
        busy.withLock { busy in
            driving.withLock { _ = $0.insert(driver) }
            busy.insert(driver)
        }
        for verb in ["arrive", "start", "complete"] {
            var ok = false
            await context.recorded("POST /driver/rides/{id}/\(verb)", second: second) {
                let outcome = LoadContext.outcome(await context.call(.POST, "/driver/rides/\(order)/\(verb)", token: token), expected: [200], label: verb)
                if case .ok = outcome { ok = true }
                return outcome
            }
            if !ok { break }
        }
        busy.withLock { busy in
            driving.withLock { _ = $0.remove(driver) }
            busy.remove(driver)
        }
        await freed(driver, second: second)
    }

    /// A grab was lost: the driver is free again, unless a trip came to them meanwhile (then the trip's
    /// end frees them). True when free.
    private func release(_ driver: String) -> Bool {
        busy.withLock { busy in
            guard !driving.withLock({ $0.contains(driver) }) else { return false }
            busy.remove(driver)
            return true
        }
    }

    /// A point as JSON, written directly: Foundation's JSONSerialization (a bridged dictionary per body)
    /// was the largest single cost of the generator's rush hour.
    private static func json(_ point: GeoPoint) -> String {
        #"{"lat":\#(point.lat),"lon":\#(point.lon)}"#
    }

    /// Each driver sends a fix every `fixSeconds`, spread evenly, until the run ends: on an event loop,
    /// its timers and requests there (as the open loop's). Wakes once per `fixTick` and sends the fixes
    /// due by then. On the gateway's plain-http lane a fix is its driver's request head (made once per
    /// driver) and the point written behind it, and its answer is recorded on the loop that read it: no
    /// task, timer or `Data` per fix. A fleet's fixes are a
    /// rush hour's most frequent request (1,000 a second from 10,000 drivers), and with a wake-up, a task
    /// and a request built from strings for each the generator spent five times its per-request cost of
    /// a bare-http run on them, on the cores the measured platform runs on.
    private func sendFixes(on loop: any EventLoop) async {
        let list = driverList.withLock { $0 }
        guard !list.isEmpty else { return }
        let interval = fixSeconds / Double(list.count)
        let heads = context.lane.map { lane in list.map { lane.head(.POST, "/api/v1/driver/locations", token: $0.token, json: true) } }
        var index = 0
        let clock = ContinuousClock()
        var next = NIODeadline.now()
        var lastWake = NIODeadline.now()
        let owed = SharedCount()
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled, !stopping.load(ordering: .relaxed) {
                next = next + .nanoseconds(Int64(interval * 1e9))
                if next > .now() {
                    await loop.sleep(until: max(next, lastWake + Self.fixTick))
                    lastWake = .now()
                }
                let now = NIODeadline.now()
                let second = Int((clock.now - start).secondsValue)
                while next <= now, !stopping.load(ordering: .relaxed) {
                    let driver = index % list.count
                    index += 1
                    let body = #"{"points":[\#(Self.json(near(spread)))]}"#
                    if let heads {
                        sendFix(head: heads[driver], body: body, second: second, owed: owed, on: loop)
                    } else {
                        let token = list[driver].token
                        group.addTask {
                            await self.context.recorded("POST /driver/locations", second: second) {
                                Self.fixOutcome(await self.context.call(.POST, "/driver/locations", token: token, json: Data(body.utf8)))
                            }
                        }
                    }
                    next = next + .nanoseconds(Int64(interval * 1e9))
                }
                next = next - .nanoseconds(Int64(interval * 1e9))
            }
        }
        // The fixes' last answers (each has the lane's deadline), before the drivers go offline.
        while owed.value > 0 { await loop.sleep(until: .now() + Self.fixTick) }
    }

    /// How often the fix sender wakes: fixes due within it go together (a driver's fix every few seconds
    /// comes up to this much late, which no one would notice).
    static let fixTick = TimeAmount.milliseconds(10)

    private func sendFix(head: ByteBuffer, body: String, second: Int, owed: SharedCount, on loop: any EventLoop) {
        var request = head
        request.writeString(String(body.utf8.count))
        request.writeStaticString("\r\n\r\n")
        request.writeString(body)
        let sent = NIODeadline.now()
        let recorder = context.recorder
        owed.add(1)
        _ = context.send(request, on: loop) { reply in
            owed.add(-1)
            recorder.record(
                endpoint: "POST /driver/locations", second: second, latencyMicros: UInt64(max(0, (NIODeadline.now() - sent).nanoseconds / 1000)),
                outcome: Self.fixOutcome(reply), lateness: 0)
        }
    }

    private static func fixOutcome(_ reply: LoadContext.Reply?) -> Outcome {
        LoadContext.outcome(reply, expected: [200, 202], label: "fix")
    }

    func finish() async {
        // Orders still waiting get matched (or expire); give dispatch the time of a few windows.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let waiting = accepted.withLock { $0.values.filter { $0.createdAt != nil && ($0.state == .created || $0.state == .offered || $0.state.holdsDriver) }.count }
            if waiting == 0 { break }
            try? await Task.sleep(for: .milliseconds(500))
        }
        stopping.store(true, ordering: .relaxed)
        // The fixes stop at the flag (their last requests finish rather than being cut off); the watcher
        // has nothing left to do.
        let tasks = background.withLock { $0 }
        tasks.first?.cancel()
        for task in tasks { await task.value }
        // Drivers go offline so a later run starts from an empty city.
        let list = driverList.withLock { $0 }
        await withTaskGroup(of: Void.self) { group in
            for (index, driver) in list.enumerated() {
                if index >= 64 { await group.next() }
                group.addTask { _ = await self.context.call(.POST, "/driver/offline", token: driver.token) }
            }
        }
    }

    func audit() async throws -> [AuditCheck] {
        let ids = accepted.withLock { $0.filter { $0.value.createdAt != nil }.map(\.key) }
        // The system's own record of every order this run was told was accepted.
        let missing = SharedCount(), unreadable = SharedCount(), doubled = SharedCount(), stuck = SharedCount(), twoWinners = SharedCount()
        assignmentWaits.withLock { $0.reset() }
        await withTaskGroup(of: Void.self) { group in
            for (index, id) in ids.enumerated() {
                if index >= 64 { await group.next() }
                group.addTask {
                    let reply = await self.context.read("/rides/\(id)")
                    guard let reply, reply.status == 200, let order = try? JSONDecoder().decode(OrderAPI.Order.self, from: reply.body) else {
                        if reply?.status == 404 { missing.add(1) } else { unreadable.add(1) }
                        return
                    }
                    let assignments = order.history.filter { $0.to == .assigned }
                    if assignments.count > 1 { doubled.add(1) }
                    if order.state == .created { stuck.add(1) }
                    if let assigned = assignments.first, let created = order.history.first {
                        _ = self.assignmentWaits.withLock { $0.record(UInt64(max(0, (assigned.at - created.at) * 1000))) }
                    }
                    if order.dispatch == .offer, !assignments.isEmpty,
                        let grabs = await self.context.read("/admin/grabs/\(id)"), grabs.status == 200
                    {
                        let won = ((grabs.json["attempts"] as? [[String: Any]]) ?? []).filter { $0["outcome"] as? String == "won" }
                        if Set(won.compactMap { $0["driverID"] as? String }).count > 1 { twoWinners.add(1) }
                    }
                }
            }
        }
        let histogram = assignmentWaits.withLock { $0 }
        return [
            AuditCheck(name: "every accepted order persisted", passed: missing.value == 0, detail: "\(ids.count) accepted, \(missing.value) not found"),
            AuditCheck(name: "every accepted order readable", passed: unreadable.value == 0, detail: "\(unreadable.value) could not be read within a minute"),
            AuditCheck(name: "each order assigned at most once", passed: doubled.value == 0, detail: "\(doubled.value) orders with two assignments"),
            AuditCheck(name: "no order left in created", passed: stuck.value == 0, detail: "\(stuck.value) still created"),
            AuditCheck(name: "one grab winner per offered order", passed: twoWinners.value == 0, detail: "\(twoWinners.value) orders with two winners"),
            AuditCheck(name: "orders were matched", passed: histogram.totalCount > 0 || ids.isEmpty, detail: "\(histogram.totalCount) of \(ids.count) assigned"),
        ]
    }

    private let assignmentWaits = Mutex(Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .three))

    func figures() -> [String: [String: Double]] {
        let histogram = assignmentWaits.withLock { $0 }
        guard histogram.totalCount > 0 else { return [:] }
        return ["\(name): order to assignment (ms)": Report.percentiles(histogram, scale: 1)]
    }
}

/// Several scenarios at once, each on its own share of the schedule.
final class MixedScenario: Scenario {
    let name = "mixed"
    let parts: [any Scenario]

    init(_ parts: [any Scenario]) { self.parts = parts }

    func prepare() async throws { for part in parts { try await part.prepare() } }

    func request(_ index: Int, second: Int) async -> (endpoint: String, outcome: Outcome) {
        await parts[index % parts.count].request(index / parts.count, second: second)
    }

    func finish() async { for part in parts { await part.finish() } }

    func audit() async throws -> [AuditCheck] {
        var checks: [AuditCheck] = []
        for part in parts { checks += try await part.audit().map { AuditCheck(name: "\(part.name): \($0.name)", passed: $0.passed, detail: $0.detail) } }
        return checks
    }

    func figures() -> [String: [String: Double]] {
        parts.reduce(into: [:]) { $0.merge($1.figures()) { a, _ in a } }
    }
}

/// The HTTP reference: the same load generator against `hailstorm-bare-endpoint`, a Hummingbird route
/// shaped like the claim with nothing behind it.
final class BareHTTPScenario: Scenario {
    let name = "bare-http"
    let context: LoadContext
    /// The request's bytes, made once.
    private let claim: ByteBuffer?

    init(context: LoadContext) {
        self.context = context
        self.claim = context.lane?.request(.POST, "/api/v1/coupons/campaigns/bare/claim", token: "bare")
    }

    func prepare() async throws {
        guard let probe = await context.call(.POST, "/coupons/campaigns/bare/claim", token: "bare"), probe.status != 0 else {
            throw LoadError("nothing answers at \(context.gateway): start hailstorm-bare-endpoint PORT first")
        }
    }

    func request(_ index: Int, second: Int) async -> (endpoint: String, outcome: Outcome) {
        Self.answered(await context.call(.POST, "/coupons/campaigns/bare/claim", token: "bare"))
    }

    func submit(_ index: Int, second: Int, on loop: any EventLoop, _ done: @escaping @Sendable (OpenLoop.Answer) -> Void) -> Bool {
        guard let claim else { return false }
        return context.send(claim, on: loop) { done(Self.answered($0)) }
    }

    private static func answered(_ reply: LoadContext.Reply?) -> (endpoint: String, outcome: Outcome) {
        ("POST /coupons/campaigns/{id}/claim (bare)", LoadContext.outcome(reply, expected: [201], label: "answered"))
    }

    func finish() async {}

    func audit() async throws -> [AuditCheck] {
        let errors = context.recorder.errorCount
        return [AuditCheck(name: "every request answered 201", passed: errors == 0, detail: "\(errors) errors")]
    }

    func figures() -> [String: [String: Double]] { [:] }
}

struct LoadError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
