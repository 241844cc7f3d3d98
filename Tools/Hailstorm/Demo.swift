import ArgumentParser
import AsyncHTTPClient
import Contracts
import Foundation
import HummingbirdWSClient
import Logging
import Synchronization

/// `hailstorm demo`: a small simulated city against the running system, through the gateway like any
/// app — drivers going online and moving, a coupon flash sale opening at a set time, riders ordering rides
/// (half assigned by the matching engine, half offered for drivers to grab) and seeing ads while they wait
/// and on the receipt (and tapping some), trips driven to the end and paid with the coupons — then a
/// settlement batch, the reconciliation report and the ads' figures.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a simulated city against the running Hailstorm.")

    @OptionGroup var run: RunFolderOption

    @Option(help: "Drivers in the city.")
    var drivers: Int = 12

    @Option(help: "Riders; each orders one ride.")
    var riders: Int = 24

    @Option(help: "Coupons in the flash sale (default: half the riders).")
    var coupons: Int?

    @Option(help: "Seconds from the start until the flash sale opens.")
    var saleIn: Int = 5

    @Option(help: "Seconds the demo may take at most.")
    var timeout: Int = 180

    @Option(help: ArgumentHelp(
        "A gateway this command did not start (compose, a Kubernetes port-forward), as http://HOST:PORT.",
        discussion: "Needs --admin-file; without it, the demo plays against the `hailstorm up` of --run-dir."))
    var gateway: String?

    @Option(help: "A JSON file {\"phone\": …, \"password\": …} with the admin account of the --gateway's Hailstorm.")
    var adminFile: String?

    func validate() throws {
        guard (1...500).contains(drivers), (1...2000).contains(riders) else {
            throw ValidationError("--drivers takes 1 to 500 and --riders 1 to 2000")
        }
        guard saleIn >= 1, timeout >= 30 else { throw ValidationError("--sale-in must be at least 1 and --timeout at least 30") }
        if let gateway {
            guard let url = URL(string: gateway), url.scheme == "http" || url.scheme == "https", url.host != nil else {
                throw ValidationError("--gateway takes a URL such as http://127.0.0.1:8080, not \(gateway)")
            }
            guard adminFile != nil else { throw ValidationError("--gateway needs --admin-file: the demo runs the flash sale and settlement as admin") }
        }
    }

    func run() async throws {
        let folder = run.folder
        let base: String
        let admin: AdminCredentials
        if let gateway, let adminFile {
            base = gateway.hasSuffix("/") ? String(gateway.dropLast()) : gateway
            do {
                admin = try folder.read(AdminCredentials.self, from: adminFile)
            } catch {
                throw RunnerError("cannot read the admin account from \(adminFile): \(error)")
            }
        } else {
            guard folder.runningSupervisor != nil, let state = try? folder.read(RunState.self, from: folder.stateFile) else {
                throw RunnerError("Hailstorm is not running in \(folder.path): start it with `hailstorm up`, or name a running one with --gateway")
            }
            base = state.gateway
            admin = try folder.read(AdminCredentials.self, from: folder.adminFile)
        }
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let city = City(gateway: GatewayClient(base: base, client: client), tally: Tally())
        do {
            let ok = try await play(city, admin: admin, gateway: base)
            try await client.shutdown()
            if !ok { throw ExitCode(1) }
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func play(_ city: City, admin credentials: AdminCredentials, gateway: String) async throws -> Bool {
        let started = ContinuousClock.now
        let demoStart = Date().timeIntervalSince1970 - 5
        print("Demo city against \(gateway): \(drivers) drivers, \(riders) riders, a flash sale in \(saleIn) s")
        let admin = try await city.signIn(phone: credentials.phone, password: credentials.password)
        let driverAccounts = try await city.signUp(count: drivers, role: "driver")
        let riderAccounts = try await city.signUp(count: riders, role: "rider")
        print("Signed up \(drivers) drivers and \(riders) riders")
        let adCampaigns = try await city.adCampaigns(admin: admin)
        // What settlement had heard before this demo: the books are read once it has heard this demo's trips too.
        let booksBefore = try await settlementHeard(city, admin: admin)

        let progress = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let elapsed = (ContinuousClock.now - started).components.seconds
                FileHandle.standardError.write(Data("\r\(elapsed)s \(city.tally.line)   ".utf8))
            }
        }
        let deadline = started + .seconds(timeout)
        try await withThrowingTaskGroup(of: Void.self) { fleet in
            for (index, driver) in driverAccounts.enumerated() {
                fleet.addTask { await city.drive(driver, index: index) }
            }
            try await withThrowingTaskGroup(of: Void.self) { crowd in
                let stock = coupons ?? max(1, riders / 2)
                crowd.addTask { try await city.flashSale(admin: admin, riders: riderAccounts, stock: stock, opensIn: .seconds(saleIn)) }
                for (index, rider) in riderAccounts.enumerated() {
                    crowd.addTask {
                        // Riders order over the first 20 seconds, alternating the two dispatch modes.
                        try await Task.sleep(for: .milliseconds(Int.random(in: 0...20_000)))
                        await city.ride(rider, dispatch: index % 2 == 0 ? .assign : .offer, until: deadline)
                    }
                }
                try await crowd.waitForAll()
            }
            fleet.cancelAll()
        }
        progress.cancel()
        FileHandle.standardError.write(Data("\n".utf8))

        print("\nSettlement and books:")
        try await waitForSettlement(city, admin: admin, before: booksBefore)
        let batch = try await city.gateway.send(.POST, "/admin/settlements/run", token: admin.token)
        if batch.status == 201 {
            let payouts = batch.json["payouts"] as? [[String: Any]] ?? []
            let cents = batch.json["totalCents"] as? Int ?? 0
            print("  settlement batch: \(payouts.count) drivers paid \(cents) cents for \(batch.json["entries"] as? Int ?? 0) ledger entries")
        } else {
            print("  settlement batch: refused (\(batch.status)): \(batch.json["title"] ?? String(decoding: batch.body, as: UTF8.self))")
        }
        let ledger = try await city.gateway.send(.GET, "/admin/ledger", token: admin.token)
        let total = ledger.json["totalCents"] as? Int
        print("  ledger: \(ledger.json["payments"] ?? 0) payments, \(ledger.json["entries"] ?? 0) entries, total \(total.map(String.init) ?? "?") cents")
        let report = try await city.gateway.send(.GET, "/admin/reconciliation", token: admin.token)
        let mismatches = (report.json["mismatches"] as? [[String: Any]]) ?? []
        print("  reconciliation: \(mismatches.isEmpty ? "no mismatch" : "\(mismatches.count) mismatches: \(mismatches.prefix(5))")")
        print("\nAds:")
        // Serving figures reach the report every two seconds.
        try await Task.sleep(for: .milliseconds(2500))
        for id in adCampaigns {
            let ad = try await city.gateway.send(.GET, "/admin/ads/campaigns/\(id)/report", token: admin.token)
            let totals = ad.json["totals"] as? [String: Any] ?? [:]
            let name = ((ad.json["campaign"] as? [String: Any])?["settings"] as? [String: Any])?["name"] as? String ?? id
            print("  \(name): \(totals["served"] ?? 0) served, \(totals["impressions"] ?? 0) impressions, \(totals["clicks"] ?? 0) clicks, "
                + "\(totals["conversions"] ?? 0) conversions, \((totals["spentMillicents"] as? Int ?? 0) / 1000) cents spent")
            // The demo's advertisers leave with it, as its drivers sign off: the next demo's riders see its own.
            _ = try? await city.gateway.send(.POST, "/admin/ads/campaigns/\(id)/end", token: admin.token)
        }
        try await printAnalytics(city, admin: admin, since: demoStart)
        print("\nSummary (\((ContinuousClock.now - started).components.seconds) s):\n" + city.tally.summary)
        let healthy = city.tally.completed > 0 && total == 0 && mismatches.isEmpty
        print(healthy ? "Demo completed." : "Demo finished with problems (see above).")
        return healthy
    }

    /// How many completed orders and succeeded payments settlement has heard of, from its reconciliation
    /// report (nil when the report is not available).
    private func settlementHeard(_ city: City, admin: Account) async throws -> (completed: Int, payments: Int)? {
        let report = try await city.gateway.send(.GET, "/admin/reconciliation", token: admin.token)
        guard report.status == 200, let completed = report.json["completedOrders"] as? Int,
            let payments = report.json["payments"] as? Int
        else { return nil }
        return (completed, payments)
    }

    /// Settlement hears of completions and payments from two streams, a moment after the rider saw them:
    /// the batch and the reconciliation wait (at most 30 s) until it has heard of every trip this demo
    /// completed and paid, so that a mismatch they report is one that stays.
    private func waitForSettlement(_ city: City, admin: Account, before: (completed: Int, payments: Int)?) async throws {
        guard let before else { return }
        let counts = city.tally.snapshot
        let (completed, paid) = (counts.completed, counts.paid)
        let waitStarted = ContinuousClock.now
        var heard = before
        while ContinuousClock.now - waitStarted < .seconds(30) {
            guard let now = try await settlementHeard(city, admin: admin) else { return }
            heard = now
            if now.completed >= before.completed + completed, now.payments >= before.payments + paid { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        print("  settlement had heard of \(heard.completed - before.completed) of \(completed) completed trips and "
            + "\(heard.payments - before.payments) of \(paid) payments after 30 s")
    }

    /// What analytics made of the demo: its figures, the funnel's drop-offs, flagged trips and the
    /// busiest pickup cell, once it has counted the demo's completed trips.
    private func printAnalytics(_ city: City, admin: Account, since start: Double) async throws {
        print("\nAnalytics:")
        let range = "from=\(Int(start))&to=\(Int(Date().timeIntervalSince1970) + 60)"
        var total: [String: Any] = [:]
        // Trips' paths are read five seconds after they end; the figures come within a second.
        for _ in 0..<30 {
            let kpis = try await city.gateway.send(.GET, "/admin/analytics/kpis?\(range)&step=hour", token: admin.token)
            guard kpis.status == 200 else {
                print("  not available (\(kpis.status))")
                return
            }
            total = kpis.json["total"] as? [String: Any] ?? [:]
            if total["completed"] as? Int ?? 0 >= city.tally.completed { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        try await Task.sleep(for: .seconds(6))
        func percent(_ key: String) -> String { (total[key] as? Double).map { String(format: "%.0f %%", $0 * 100) } ?? "–" }
        let assign = total["timeToAssign"] as? [String: Any]
        print("  \(total["quotes"] ?? 0) quotes → \(total["orders"] ?? 0) orders (\(percent("quoteConversion"))), match rate \(percent("matchRate")), "
            + "time to assign p50 \(assign?["p50"] ?? "–") s p90 \(assign?["p90"] ?? "–") s")
        print("  \(total["completed"] ?? 0) completed, \(total["paid"] ?? 0) paid, GMV \(total["gmvCents"] ?? 0) cents, "
            + "coupons took \(total["couponSubsidyCents"] ?? 0), commission \(total["commissionCents"] ?? 0); "
            + "\(total["activeRiders"] ?? 0) riders and \(total["activeDrivers"] ?? 0) drivers active")
        let flagged = try await city.gateway.send(.GET, "/admin/analytics/anomalies?\(range)", token: admin.token)
        let trips = flagged.json["trips"] as? [[String: Any]] ?? []
        var kinds: [String: Int] = [:]
        for trip in trips { for flag in trip["flags"] as? [String] ?? [] { kinds[flag, default: 0] += 1 } }
        print("  flagged trips: \(trips.count)" + (kinds.isEmpty ? "" : " (" + kinds.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ") + ")"))
        if let first = trips.first?["orderID"] as? String {
            print("  one of them, as GeoJSON: GET /api/v1/admin/analytics/trips/\(first)/path")
        }
        let heat = try await city.gateway.send(.GET, "/admin/analytics/heatmap?kind=pickups&\(range)", token: admin.token)
        let cells = (heat.json["features"] as? [[String: Any]] ?? []).compactMap { $0["properties"] as? [String: Any] }
        if let busiest = cells.max(by: { ($0["value"] as? Double ?? 0) < ($1["value"] as? Double ?? 0) }) {
            print("  pickups in \(cells.count) cells; the busiest, \(busiest["cell"] ?? "?"), had \(busiest["value"] ?? 0)")
        }
    }
}

/// What happened in the city, for the progress line and the summary.
final class Tally: Sendable {
    struct Counts {
        var online = 0, granted = 0, soldOut = 0, limitReached = 0, notStarted = 0, ended = 0
        var requested = 0, assignMode = 0, offerMode = 0, assigned = 0, grabsWon = 0, grabsLost = 0
        var completed = 0, paid = 0, paidCents = 0, discountCents = 0, expired = 0, cancelled = 0, unfinished = 0
        var declined = 0, errors = 0
        var adsServed = 0, adsNone = 0, adClicks = 0
    }
    private let counts = Mutex(Counts())

    func update(_ change: (inout Counts) -> Void) { counts.withLock { change(&$0) } }
    var completed: Int { counts.withLock { $0.completed } }
    var snapshot: Counts { counts.withLock { $0 } }

    var line: String {
        counts.withLock { c in
            "drivers online \(c.online) · coupons \(c.granted) granted \(c.soldOut) sold out · rides \(c.requested) ordered \(c.assigned) matched "
                + "\(c.completed) completed \(c.paid) paid \(c.expired) expired"
        }
    }

    var summary: String {
        counts.withLock { c in
            """
              flash sale: \(c.granted) coupons granted; refused: \(c.soldOut) sold out, \(c.limitReached) limit reached, \(c.notStarted) not started, \(c.ended) ended
              rides: \(c.requested) ordered (\(c.assignMode) assign mode, \(c.offerMode) offer mode), \(c.assigned) matched (\(c.grabsWon) by a won grab; \(c.grabsLost) grabs refused: the order taken by another driver or no longer offered)
              trips: \(c.completed) completed, \(c.expired) expired, \(c.cancelled) cancelled, \(c.unfinished) unfinished at the time limit
              payments: \(c.paid) paid, \(c.paidCents) cents charged, \(c.discountCents) cents of coupons, \(c.declined) declined
              ads: \(c.adsServed) shown to riders, \(c.adClicks) tapped, \(c.adsNone) slots with none
              errors: \(c.errors)
            """
        }
    }
}

/// Whether a simulated driver is taken (grabbing, or driving a trip).
final class BusyFlag: Sendable {
    private let taken = Atomic<Bool>(false)

    /// Takes the driver when free; false when already taken.
    func claim() -> Bool { taken.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged }
    func release() { taken.store(false, ordering: .relaxed) }
}

/// Offers a simulated driver was pushed while busy: its app keeps them listed, and the driver tries them,
/// newest first, once free (an offer that ended meanwhile is answered 409 and dropped).
final class StandingOffers: Sendable {
    private let orders = Mutex<[String]>([])

    func keep(_ order: String) { orders.withLock { $0.append(order) } }
    func takeNewest() -> String? { orders.withLock { $0.popLast() } }
}

struct Account: Sendable {
    var id: String
    var token: String
}

/// The simulated people, all through the gateway.
struct City: Sendable {
    let gateway: GatewayClient
    let tally: Tally
    static let centre = (lat: 52.5200, lon: 13.4050)

    func signIn(phone: String, password: String) async throws -> Account {
        let answer = try await gateway.send(.POST, "/auth/login", json: ["phone": phone, "password": password])
        guard answer.status == 200, let token = answer.json["accessToken"] as? String,
            let id = (answer.json["user"] as? [String: Any])?["id"] as? String
        else { throw RunnerError("sign-in failed: \(answer.status) \(String(decoding: answer.body, as: UTF8.self))") }
        return Account(id: id, token: token)
    }

    /// Signs up `count` accounts, eight at a time (sign-up hashes a password: it is meant to be slow).
    func signUp(count: Int, role: String) async throws -> [Account] {
        try await withThrowingTaskGroup(of: Account.self) { group in
            var accounts: [Account] = []
            for index in 0..<count {
                if index >= 8, let account = try await group.next() { accounts.append(account) }
                group.addTask {
                    let phone = "+49" + String(Int.random(in: 1_000_000_000...9_999_999_999))
                    let password = RunFolder.randomToken(16)
                    let up = try await gateway.send(
                        .POST, "/auth/signup",
                        json: ["role": role, "phone": phone, "password": password, "name": "Demo \(role) \(index + 1)"])
                    guard up.status == 201 else { throw RunnerError("sign-up failed: \(up.status) \(String(decoding: up.body, as: UTF8.self))") }
                    return try await signIn(phone: phone, password: password)
                }
            }
            for try await account in group { accounts.append(account) }
            return accounts
        }
    }

    /// The admin opens a sale of `stock` coupons `opensIn` from now; every rider presses at the opening.
    func flashSale(admin: Account, riders: [Account], stock: Int, opensIn: Duration) async throws {
        let opensAt = Date().timeIntervalSince1970 + Double(opensIn.components.seconds)
        let campaign = try await gateway.send(.POST, "/admin/coupons/campaigns", token: admin.token, json: [
            "name": "Demo rush-hour sale", "city": "Berlin", "kind": "amount", "amountOffCents": 200, "minimumFareCents": 0,
            "stock": stock, "perUserLimit": 1, "startsAt": opensAt, "endsAt": opensAt + 3600,
        ], idempotencyKey: UUID().uuidString)
        guard campaign.status == 201, let id = campaign.json["id"] as? String else {
            tally.update { $0.errors += 1 }
            throw RunnerError("campaign not created: \(campaign.status) \(String(decoding: campaign.body, as: UTF8.self))")
        }
        try await Task.sleep(for: .seconds(max(0, opensAt - Date().timeIntervalSince1970)))
        await withTaskGroup(of: Void.self) { group in
            for rider in riders {
                group.addTask {
                    for attempt in 0..<3 {
                        guard let answer = try? await gateway.send(.POST, "/coupons/campaigns/\(id)/claim", token: rider.token, idempotencyKey: "demo-\(rider.id)") else {
                            tally.update { $0.errors += 1 }
                            return
                        }
                        switch (answer.status, answer.problemType) {
                        case (201, _): tally.update { $0.granted += 1 }
                        case (_, "sold-out"): tally.update { $0.soldOut += 1 }
                        case (_, "limit-reached"): tally.update { $0.limitReached += 1 }
                        case (_, "not-started") where attempt < 2:
                            // Pressed a moment early by the server's clock: press again.
                            try? await Task.sleep(for: .milliseconds(300))
                            continue
                        case (_, "not-started"): tally.update { $0.notStarted += 1 }
                        case (_, "ended"): tally.update { $0.ended += 1 }
                        default: tally.update { $0.errors += 1 }
                        }
                        return
                    }
                }
            }
        }
    }

    /// Two advertisers: a kiosk paying per thousand impressions while riders wait, and a bank paying per
    /// click on the waiting screen and the receipt. Both run at once (the demo is too short for pacing).
    func adCampaigns(admin: Account) async throws -> [String] {
        let now = Date().timeIntervalSince1970
        var ids: [String] = []
        for (name, placements, pricing, bid, title) in [
            ("Kiosk 24", ["rider.waiting"], "cpm", 800, "Cold drinks at the corner"),
            ("Spree Bank", ["rider.waiting", "rider.receipt"], "cpc", 40, "A card that pays your rides back"),
        ] {
            let created = try await gateway.send(.POST, "/admin/ads/campaigns", token: admin.token, json: [
                "name": name, "advertiser": name, "placements": placements, "creative": ["title": title, "text": "Tap to see more"],
                "targeting": ["city": "Berlin"], "pricing": pricing, "bidCents": bid, "dailyBudgetCents": 5000, "totalBudgetCents": 5000,
                "frequencyCapPerDay": 5, "pacing": "asap", "startsAt": now - 60, "endsAt": now + 86_400,
            ], idempotencyKey: UUID().uuidString)
            guard created.status == 201, let id = created.json["id"] as? String else {
                throw RunnerError("ad campaign not created: \(created.status) \(String(decoding: created.body, as: UTF8.self))")
            }
            _ = try await gateway.send(.POST, "/admin/ads/campaigns/\(id)/resume", token: admin.token)
            ids.append(id)
        }
        return ids
    }

    /// A rider's ad slot: shown (counted), and tapped one time in five.
    private func showAd(_ placement: String, to rider: Account, at point: [String: Double]) async {
        guard let ad = try? await gateway.send(
            .GET, "/ads?placement=\(placement)&lat=\(point["lat"] ?? 0)&lon=\(point["lon"] ?? 0)", token: rider.token)
        else {
            tally.update { $0.errors += 1 }
            return
        }
        guard ad.status == 200, let impression = ad.json["impressionToken"] as? String, let click = ad.json["clickToken"] as? String else {
            tally.update { $0.adsNone += 1 }
            return
        }
        tally.update { $0.adsServed += 1 }
        _ = try? await gateway.send(.POST, "/ads/impressions", token: rider.token, json: ["token": impression])
        if Int.random(in: 0..<5) == 0 {
            _ = try? await gateway.send(.POST, "/ads/clicks", token: rider.token, json: ["token": click])
            tally.update { $0.adClicks += 1 }
        }
    }

    /// A driver: online near the centre, a fix every second while moving about, grabbing what it is
    /// offered, driving what it is given (arrive, start, complete). Ends, offline, when cancelled.
    func drive(_ driver: Account, index: Int) async {
        var position = (lat: Self.centre.lat + Double.random(in: -0.02...0.02), lon: Self.centre.lon + Double.random(in: -0.03...0.03))
        guard let online = try? await gateway.send(
            .POST, "/driver/online", token: driver.token, json: ["lat": position.lat, "lon": position.lon]), online.status == 200
        else {
            tally.update { $0.errors += 1 }
            return
        }
        tally.update { $0.online += 1 }
        let busy = BusyFlag(), standing = StandingOffers()
        let offers = Task { await listenForOffers(driver, busy: busy, standing: standing) }
        var driven: Set<String> = []
        while !Task.isCancelled {
            position.lat += Double.random(in: -0.0005...0.0005)
            position.lon += Double.random(in: -0.0008...0.0008)
            _ = try? await gateway.send(
                .POST, "/driver/locations", token: driver.token, json: ["points": [["lat": position.lat, "lon": position.lon]]])
            if let trips = try? await gateway.send(.GET, "/rides?limit=3", token: driver.token),
                let page = try? trips.decode(OrderAPI.OrderPage.self)
            {
                for order in page.orders where order.driverID == driver.id && order.state.holdsDriver && !driven.contains(order.id) {
                    driven.insert(order.id)
                    _ = busy.claim()
                    if let end = await trip(order, driver: driver, from: GeoPoint(lat: position.lat, lon: position.lon)) { position = (end.lat, end.lon) }
                    busy.release()
                    await grabStanding(driver, busy: busy, standing: standing)
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
        offers.cancel()
        var patient = gateway
        patient.patience = .seconds(5)
        // This task is cancelled by now, and a request sent from it would be cancelled before it left:
        // the sign-off goes out from a task of its own, or the driver stays online in matching after the
        // demo and the next demo's orders are assigned to nobody at the wheel.
        let offline = Task { _ = try? await patient.send(.POST, "/driver/offline", token: driver.token) }
        await offline.value
    }

    /// Drives an assigned order: from `start` to the pickup, then along the way to the drop-off, the phone
    /// sending a fix every few hundred metres. One trip in eight takes a wide detour, for analytics' route
    /// checks to find. Returns where the trip ended, when it did.
    private func trip(_ order: OrderAPI.Order, driver: Account, from start: GeoPoint) async -> GeoPoint? {
        let detour = Int.random(in: 0..<8) == 0
        var route: [GeoPoint] = []
        let (a, b) = (order.pickup, order.dropoff)
        // Three kilometres to the side of the halfway point.
        let kmPerDegree = 111.2, squeeze = cos(a.lat * .pi / 180)
        let dx = (b.lon - a.lon) * kmPerDegree * squeeze, dy = (b.lat - a.lat) * kmPerDegree, length = max(0.1, hypot(dx, dy))
        let bend = GeoPoint(
            lat: (a.lat + b.lat) / 2 + dx / length * 3 / kmPerDegree, lon: (a.lon + b.lon) / 2 - dy / length * 3 / (kmPerDegree * squeeze))
        for (from, to) in detour ? [(a, bend), (bend, b)] : [(a, b)] {
            for i in 1...6 {
                let s = Double(i) / 6
                route.append(GeoPoint(lat: from.lat + (to.lat - from.lat) * s, lon: from.lon + (to.lon - from.lon) * s))
            }
        }
        let steps: [(OrderState, String, Duration)] = [(.arriving, "arrive", .seconds(1)), (.inTrip, "start", .seconds(1)), (.completed, "complete", .zero)]
        let toPickup = (1...3).map { i in
            GeoPoint(lat: start.lat + (a.lat - start.lat) * Double(i) / 3, lon: start.lon + (a.lon - start.lon) * Double(i) / 3)
        }
        for (state, verb, pause) in steps {
            try? await Task.sleep(for: pause)
            if state == .arriving || state == .completed {
                for point in state == .arriving ? toPickup : route {
                    _ = try? await gateway.send(
                        .POST, "/driver/locations", token: driver.token, json: ["points": [["lat": point.lat, "lon": point.lon]]])
                    try? await Task.sleep(for: .milliseconds(300))
                }
            }
            guard let answer = try? await gateway.send(.POST, "/driver/rides/\(order.id)/\(verb)", token: driver.token) else {
                tally.update { $0.errors += 1 }
                return nil
            }
            // A 409 after a retry can mean the move was made by the first attempt; read the order then.
            if answer.status != 200 {
                let now = try? await gateway.send(.GET, "/rides/\(order.id)", token: driver.token).decode(OrderAPI.Order.self)
                guard let now, now.history.contains(where: { $0.to == state }) else { return nil }
            }
        }
        return b
    }

    /// Grabs an order offered to this driver in offer mode when it is free, over the gateway's WebSocket
    /// (reconnecting when the gateway restarts). One grab at a time, as a person would.
    private func listenForOffers(_ driver: Account, busy: BusyFlag, standing: StandingOffers) async {
        let socket = gateway.base.replacingOccurrences(of: "http://", with: "ws://") + "/ws?ticket="
        while !Task.isCancelled {
            // A ticket opens one socket within a minute; every (re)connection asks for one.
            guard let ticket = (try? await gateway.send(.POST, "/ws/ticket", token: driver.token))?.json["ticket"] as? String else {
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            try? await WebSocketClient.connect(url: socket + ticket, logger: Logger(label: "demo-driver")) { inbound, _, _ in
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message,
                        let push = try? JSONDecoder().decode(PushMessage.self, from: Data(text.utf8)),
                        push.type == "order.offered", push.reason?.hasPrefix("offered to") == true
                    else { continue }
                    guard busy.claim() else {
                        standing.keep(push.orderID)
                        continue
                    }
                    Task {
                        try? await Task.sleep(for: .milliseconds(Int.random(in: 50...400)))
                        if await grab(push.orderID, driver: driver) { return }
                        busy.release()
                        await grabStanding(driver, busy: busy, standing: standing)
                    }
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// One grab; true when won (a won grab keeps the driver busy until the trip loop has driven it).
    private func grab(_ order: String, driver: Account) async -> Bool {
        let grab = try? await gateway.send(.POST, "/driver/offers/\(order)/grab", token: driver.token)
        tally.update { if grab?.status == 200 { $0.grabsWon += 1 } else { $0.grabsLost += 1 } }
        return grab?.status == 200
    }

    /// A driver free again tries the offers it was pushed while busy, newest first, until one is won.
    private func grabStanding(_ driver: Account, busy: BusyFlag, standing: StandingOffers) async {
        while let order = standing.takeNewest() {
            guard busy.claim() else {
                standing.keep(order)
                return
            }
            if await grab(order, driver: driver) { return }
            busy.release()
        }
    }

    /// A rider: orders, waits for the trip to end, pays with a coupon from the wallet when there is one.
    func ride(_ rider: Account, dispatch: OrderAPI.Dispatch, until deadline: ContinuousClock.Instant) async {
        let pickup = ["lat": Self.centre.lat + Double.random(in: -0.015...0.015), "lon": Self.centre.lon + Double.random(in: -0.02...0.02)]
        let dropoff = ["lat": Self.centre.lat + Double.random(in: -0.04...0.04), "lon": Self.centre.lon + Double.random(in: -0.06...0.06)]
        // The app shows the fare first.
        _ = try? await gateway.send(.POST, "/rides/quote", token: rider.token, json: ["pickup": pickup, "dropoff": dropoff])
        guard let created = try? await gateway.send(
            .POST, "/rides", token: rider.token, json: ["pickup": pickup, "dropoff": dropoff, "dispatch": dispatch.rawValue],
            idempotencyKey: UUID().uuidString),
            created.status == 201, let order = try? created.decode(OrderAPI.Order.self)
        else {
            tally.update { $0.errors += 1 }
            return
        }
        tally.update {
            $0.requested += 1
            if dispatch == .assign { $0.assignMode += 1 } else { $0.offerMode += 1 }
        }
        // The waiting screen's ad.
        await showAd("rider.waiting", to: rider, at: pickup)
        var matched = false
        var current = order
        while ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(500))
            guard let now = try? await gateway.send(.GET, "/rides/\(order.id)", token: rider.token).decode(OrderAPI.Order.self) else { continue }
            current = now
            if !matched, now.driverID != nil, now.history.contains(where: { $0.to == .assigned }) {
                matched = true
                tally.update { $0.assigned += 1 }
            }
            if now.state.isFinal || now.state == .completed { break }
        }
        switch current.state {
        case .completed: break
        case .expired: tally.update { $0.expired += 1 }; return
        case .cancelled: tally.update { $0.cancelled += 1 }; return
        default: tally.update { $0.unfinished += 1 }; return
        }
        tally.update { $0.completed += 1 }
        await pay(current, rider: rider)
        await showAd("rider.receipt", to: rider, at: dropoff)
    }

    private func pay(_ order: OrderAPI.Order, rider: Account) async {
        let wallet = try? await gateway.send(.GET, "/coupons/wallet", token: rider.token).decode(CouponAPI.Wallet.self)
        let coupon = wallet?.coupons.first { $0.state == "available" }
        var body: [String: Any] = ["orderID": order.id]
        if let coupon { body["couponID"] = coupon.claimID }
        guard let paid = try? await gateway.send(.POST, "/payments", token: rider.token, json: body, idempotencyKey: "demo-pay-\(order.id)") else {
            tally.update { $0.errors += 1 }
            return
        }
        if paid.status == 201, let payment = try? paid.decode(PaymentAPI.Payment.self) {
            tally.update {
                $0.paid += 1
                $0.paidCents += payment.amountCents
                $0.discountCents += payment.discountCents
            }
        } else if paid.problemType == "payment-declined" {
            tally.update { $0.declined += 1 }
        } else {
            tally.update { $0.errors += 1 }
        }
    }
}
