import Foundation
import HailKitTesting
import Testing

/// `hailstorm up` → status → each load scenario at a CI-sized rate → a killed service restarted → the
/// demo city → `hailstorm down`: the local run as a user drives it, with the built executables.
@Suite("the local run: hailstorm up, self-healing, load scenarios with their audits, the demo, down", .serialized, .timeLimit(.minutes(10)))
struct LocalRunTests {
    let runDir: String
    let bin = TestEnvironment.executablesDirectory.path

    init() throws {
        runDir = try TestEnvironment.temporaryDirectory("hailstorm-run")
    }

    /// Runs `hailstorm-…` with `arguments`; returns its exit status and output.
    func tool(_ name: String, _ arguments: [String], timeout: Duration = .seconds(300)) async throws -> (status: Int32, output: String) {
        let process = try TestProcess(executable: bin + "/" + name, arguments: arguments, name: name)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(200)) }
        if process.isRunning { process.kill() }
        return (process.terminate(), process.output())
    }

    /// Waits (up to 30 s) until Prometheus's targets API shows every instance but Redis and Prometheus up,
    /// each scraped at the port `hailstorm status` gives it.
    func expectScraped(_ instances: [[String: Any]], prometheus: Int) async throws {
        let expected = instances.filter { !["redis", "prometheus"].contains($0["service"] as? String ?? "") }
            .compactMap { entry -> (String, Int)? in
                guard let name = entry["instance"] as? String, let port = entry["port"] as? Int else { return nil }
                return (name, port)
            }
        #expect(expected.count == 17, "etcd, 10 services, 2 gateways, 2 shards each of order, coupon, payment and ad: \(expected)")
        var missing: [String] = []
        let deadline = ContinuousClock.now + .seconds(30)
        repeat {
            let answer = try await testRequest(.GET, "http://127.0.0.1:\(prometheus)/api/v1/targets?state=active")
            let targets = ((answer.json["data"] as? [String: Any])?["activeTargets"] as? [[String: Any]]) ?? []
            missing = expected.filter { name, port in
                !targets.contains { target in
                    (target["labels"] as? [String: String])?["instance"] == name && target["health"] as? String == "up"
                        && (target["scrapeUrl"] as? String)?.contains("127.0.0.1:\(port)/metrics") == true
                }
            }.map { "\($0.0) at \($0.1)" }
            if missing.isEmpty { return }
            try await Task.sleep(for: .seconds(1))
        } while ContinuousClock.now < deadline
        Issue.record("not scraped up at their ports after 30 s: \(missing)")
    }

    func status() async throws -> [[String: Any]] {
        let (code, output) = try await tool("hailstorm", ["status", "--json", "--run-dir", runDir])
        try #require(code == 0, "status: \(output)")
        let state = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        return (state["instances"] as? [[String: Any]]) ?? []
    }

    @Test("up, a load smoke of every scenario, kill -9 of a service mid-demo, demo, down")
    func localRun() async throws {
        let port = try TestEnvironment.freePort()
        // Whatever happens, the stack goes down (`down` is waited for, not signalled).
        defer { _ = try? TestProcess(executable: bin + "/hailstorm", arguments: ["down", "--run-dir", runDir], name: "down").waitForExit() }
        let up = try await tool("hailstorm", [
            "up", "--run-dir", runDir, "--gateway-port", String(port), "--bin-dir", bin, "--replicas", "gateway=2", "--replicas", "order=2,coupon=2,payment=2,ad=2",
            "--option", "login:auth-bcrypt-cost=4", "--option", "matching:matching-window-ms=500",
            "--option", "matching:matching-offer-seconds=5",
        ])
        try #require(up.status == 0, "up: \(up.output)")
        var instances = try await status()
        #expect(instances.count == 19, "redis, etcd, 10 services, 2 gateways, 2 shards each of order, coupon, payment and ad, and Prometheus: \(instances.map { $0["instance"] ?? "" })")
        #expect(instances.allSatisfy { $0["health"] as? String == "ready" && $0["pid"] as? Int != nil })
        // Prometheus scrapes every instance where it listens (both gateways among them) and has Hailstorm's rules.
        let prometheus = try #require(instances.first { $0["service"] as? String == "prometheus" }?["port"] as? Int)
        #expect(up.output.contains("Prometheus: http://127.0.0.1:\(prometheus)"), "\(up.output)")
        try await expectScraped(instances, prometheus: prometheus)
        let rules = try await testRequest(.GET, "http://127.0.0.1:\(prometheus)/api/v1/rules")
        let groups = ((rules.json["data"] as? [String: Any])?["groups"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(groups.sorted() == ["hailstorm-alerts", "hailstorm-platform", "hailstorm-red"], "\(rules.text.prefix(500))")
        #expect(up.output.contains("Command:    http://127.0.0.1:\(port)/command/"), "\(up.output)")

        // The command centre's board: every scraped instance, as Prometheus sees it, through the gateway.
        let admin = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: runDir + "/admin.json"))) as? [String: String])
        let base = "http://127.0.0.1:\(port)/api/v1"
        let signIn = try await testRequest(.POST, base + "/auth/login", json: ["phone": admin["phone"] ?? "", "password": admin["password"] ?? ""])
        let token = try #require(signIn.json["accessToken"] as? String, "admin sign-in: \(signIn.status)")
        let asAdmin = ["Authorization": "Bearer \(token)"]
        let board = try await testRequest(.GET, base + "/admin/command/board", headers: asAdmin)
        let boarded = (board.json["instances"] as? [[String: Any]] ?? []).filter { $0["health"] as? String == "up" }.compactMap { $0["instance"] as? String }
        #expect(board.json["prometheus"] as? String == "http://127.0.0.1:\(prometheus)", "\(board.text.prefix(300))")
        #expect(Set(boarded) == Set(instances.compactMap { $0["instance"] as? String }).subtracting(["redis", "prometheus"]), "board: \(board.text.prefix(2000))")
        // The command centre's page in headless Chromium, signed in as a person signs in.
        try #require(WebDriver.isAvailable, "the page is tested in Chromium: apt-get install chromium chromium-driver")
        let browser = try await WebDriver(width: 1600, height: 2000)
        let shots = URL(fileURLWithPath: bin).deletingLastPathComponent().deletingLastPathComponent().path + "/command-page-screenshots"
        try await browser.open("http://127.0.0.1:\(port)/command")
        try await browser.type(admin["phone"] ?? "", into: "#signin-phone")
        try await browser.type(admin["password"] ?? "", into: "#signin-password")
        try await browser.click("#signin-submit")
        let everyInstance = Set(instances.compactMap { $0["instance"] as? String }).subtracting(["redis", "prometheus"]).sorted()
        try await browser.wait(
            "every instance up on the service board",
            "return [...document.querySelectorAll('#board tbody tr[data-health=up]')].map(r => r.dataset.instance).sort().join(',') === arguments[0]",
            [everyInstance.joined(separator: ",")])
        #expect(try await browser.run("return document.querySelector('#live').textContent") as? String ?? "" != "", "the live indicator")
        try await browser.screenshot(to: shots + "/1-board.png")
        /// The command centre's book entry for settlement-1's HailstormInstanceDown, the newest.
        func bookedAlert() async throws -> [String: Any]? {
            let answer = try await testRequest(.GET, base + "/admin/command/alerts", headers: asAdmin)
            return (answer.json["alerts"] as? [[String: Any]] ?? []).first {
                $0["name"] as? String == "HailstormInstanceDown" && ($0["labels"] as? [String: String])?["instance"] == "settlement-1"
            }
        }
        // A hung instance (stopped, not dead: the supervisor leaves it be) fires its alert; going on resolves it.
        let settlement = try #require(instances.first { $0["instance"] as? String == "settlement-1" }?["pid"] as? Int)
        func settlementAlert() async throws -> String? {
            let answer = try await testRequest(.GET, "http://127.0.0.1:\(prometheus)/api/v1/alerts")
            let alerts = ((answer.json["data"] as? [String: Any])?["alerts"] as? [[String: Any]]) ?? []
            return alerts.first {
                let labels = $0["labels"] as? [String: String]
                return labels?["alertname"] == "HailstormInstanceDown" && labels?["instance"] == "settlement-1"
            }?["state"] as? String
        }
        kill(pid_t(settlement), SIGSTOP)
        var alert: String?
        var alertDeadline = ContinuousClock.now + .seconds(60)
        repeat {
            try await Task.sleep(for: .seconds(1))
            alert = try await settlementAlert()
        } while alert != "firing" && ContinuousClock.now < alertDeadline
        // The command centre reads Prometheus's alerts every 2 s into its book.
        var booked: [String: Any]? = nil
        let bookDeadline = ContinuousClock.now + .seconds(15)
        repeat {
            booked = try await bookedAlert()
            if booked?["state"] as? String == "firing" { break }
            try await Task.sleep(for: .milliseconds(500))
        } while ContinuousClock.now < bookDeadline
        let alertRow = "#alerts tr[data-name=HailstormInstanceDown][data-instance='settlement-1']"
        var pageSawFiring = true
        do {
            try await browser.wait("settlement-1's alert firing", timeout: .seconds(10), "return !!document.querySelector(arguments[0])", [alertRow + "[data-state=firing]"])
            try await browser.screenshot(to: shots + "/2-alert-firing.png")
        } catch {
            pageSawFiring = false
        }
        kill(pid_t(settlement), SIGCONT)
        #expect(pageSawFiring, "the page shows settlement-1's alert firing")
        #expect(alert == "firing", "HailstormInstanceDown for a stopped settlement-1: \(alert ?? "none")")
        #expect(booked?["state"] as? String == "firing", "the command centre's book: \(booked ?? [:])")
        alertDeadline = ContinuousClock.now + .seconds(60)
        repeat {
            try await Task.sleep(for: .seconds(1))
            alert = try await settlementAlert()
        } while alert != nil && ContinuousClock.now < alertDeadline
        #expect(alert == nil, "settlement-1's alert still \(alert ?? "") a minute after it went on")
        let resolveDeadline = ContinuousClock.now + .seconds(15)
        repeat {
            booked = try await bookedAlert()
            if booked?["state"] as? String == "resolved" { break }
            try await Task.sleep(for: .milliseconds(500))
        } while ContinuousClock.now < resolveDeadline
        #expect(booked?["state"] as? String == "resolved", "the command centre's book: \(booked ?? [:])")
        let firedAt = try #require(booked?["firedAt"] as? Double), resolvedAt = try #require(booked?["resolvedAt"] as? Double)
        #expect(firedAt < resolvedAt)
        // Resolved on the page too, and acknowledged there: the book and the audit log both say who.
        try await browser.wait("settlement-1's alert resolved", timeout: .seconds(10), "return !!document.querySelector(arguments[0])", [alertRow + "[data-state=resolved]"])
        try await browser.click(alertRow + "[data-state=resolved] button.acknowledge")
        try await browser.wait("the acknowledgement", timeout: .seconds(10), "return (document.querySelector(arguments[0]) || {}).textContent.includes('acknowledged by')", [alertRow + "[data-state=resolved]"])
        try await browser.screenshot(to: shots + "/3-alert-resolved.png")
        let alertID = try #require(booked?["id"] as? String)
        let book = try await testRequest(.GET, base + "/admin/command/alerts?state=resolved", headers: asAdmin)
        let acknowledged = (book.json["alerts"] as? [[String: Any]] ?? []).first { $0["id"] as? String == alertID }
        #expect(acknowledged?["acknowledgedBy"] as? String != nil, "\(book.text.prefix(500))")
        let audit = try await testRequest(.GET, base + "/admin/command/audit", headers: asAdmin)
        let entry = (audit.json["entries"] as? [[String: Any]] ?? []).first
        #expect(entry?["action"] as? String == "alert.acknowledge", "\(audit.text.prefix(500))")
        #expect(entry?["before"] as? [String: String] == ["acknowledged": "no", "state": "resolved"])
        #expect(try await tool("hailstorm", ["up", "--run-dir", runDir, "--bin-dir", bin]).output.contains("already running"))

        // Every scenario at a CI-sized rate; each must pass its audit.
        for (run, (scenario, extra)) in [
            ("flash-sale", ["--coupons", "50", "--riders", "200", "--profile", "burst"]),
            // Riders on the countdown first: the sale opens two seconds after it is announced.
            ("flash-sale", ["--coupons", "50", "--riders", "200", "--waiting-room", "2"]),
            ("rush-hour", ["--drivers", "60", "--profile", "ramp"]),
            ("grab-storm", ["--drivers", "20"]),
            ("ad-storm", ["--riders", "100"]),
            ("mixed", ["--coupons", "30", "--riders", "100", "--drivers", "40"]),
        ].enumerated() {
            let out = runDir + "/load-\(run)-\(scenario)"
            let load = try await tool("hailstorm-load", [scenario, "--rate", "20", "--duration", "3", "--out", out, "--run-dir", runDir] + extra)
            #expect(load.status == 0, "\(scenario): \(load.output.suffix(3000))")
            let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/report.json"))) as? [String: Any]
            #expect(report?["passed"] as? Bool == true)
            if extra.contains("--waiting-room") {
                #expect(load.output.contains("waiting room: 200 riders opened the campaign's page"), "\(load.output.suffix(2000))")
                // A claim sent before the opening would be refused `not-started`, an error of the run.
                #expect((report?["errors"] as? [String: Int]) == [:], "claims before the sale opened: \(report?["errors"] ?? "")")
                #expect(((report?["outcomes"] as? [String: Int])?["granted 201"] ?? 0) > 0, "claims granted: \(report?["outcomes"] ?? "")")
            }
            #expect(((report?["audit"] as? [[String: Any]]) ?? []).count >= 4, "\(scenario) audits its checks")
            let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
            // Both charts drawn inline (per-second bars and p50/p99 lines, the percentile curve), no script.
            #expect(html.components(separatedBy: "<polyline").count - 1 >= 3, "\(scenario): the charts have their lines")
            #expect(html.contains("<rect"), "\(scenario): the timeline has its bars")
            #expect(!html.contains("<script"))
        }

        // A service killed with SIGKILL while the demo runs comes back, and the demo still finishes.
        let order = try #require(instances.first { $0["instance"] as? String == "order-1" })
        // Killed once the demo's riders have ordered: order's logs (both shards': a rider's orders go to the
        // shard of their id) have more "order created" lines than the load scenarios left there.
        let orderLogs = instances.filter { $0["service"] as? String == "order" }.compactMap { $0["log"] as? String }
        #expect(orderLogs.count == 2, "two shards of order: \(orderLogs)")
        func ordersCreated() -> Int {
            orderLogs.map { ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").components(separatedBy: "order created").count - 1 }
                .reduce(0, +)
        }
        let before = ordersCreated()
        let demo = Task { try await tool("hailstorm", ["demo", "--run-dir", runDir, "--drivers", "4", "--riders", "6", "--sale-in", "2", "--timeout", "120"]) }
        let demoDeadline = ContinuousClock.now + .seconds(60)
        while ordersCreated() == before, ContinuousClock.now < demoDeadline { try await Task.sleep(for: .milliseconds(200)) }
        #expect(ordersCreated() > before, "the demo ordered no ride within a minute")
        let pid = try #require(order["pid"] as? Int)
        let killedAt = Date().timeIntervalSince1970
        kill(pid_t(pid), SIGKILL)
        let deadline = ContinuousClock.now + .seconds(60)
        var restarted: [String: Any] = [:]
        repeat {
            try await Task.sleep(for: .milliseconds(500))
            instances = try await status()
            restarted = instances.first { $0["instance"] as? String == "order-1" } ?? [:]
        } while !(restarted["restarts"] as? Int == 1 && restarted["health"] as? String == "ready") && ContinuousClock.now < deadline
        #expect(restarted["restarts"] as? Int == 1, "\(restarted)")
        #expect(restarted["health"] as? String == "ready")
        #expect(restarted["pid"] as? Int != pid)
        // Back on a new port, and scraped there.
        try await expectScraped(instances, prometheus: prometheus)
        let (demoStatus, demoOutput) = try await demo.value
        #expect(demoStatus == 0, "demo: \(demoOutput.suffix(3000))")
        #expect(demoOutput.contains("Demo completed."))

        // The demo's drivers signed off when it ended (as the load scenarios' did): nobody is left
        // available in matching to be given the next rider's order and never drive it.
        let stats = try await testRequest(.GET, base + "/admin/dispatch/stats", headers: ["Authorization": "Bearer \(token)"])
        #expect(stats.status == 200)
        #expect(stats.json["driversAvailable"] as? Int == 0, "drivers still available after every run ended: \(stats.json)")

        // The city on the page: three drivers go online; the map shows a marker for each driver matching has online.
        var drivers: [String] = []
        for index in 0..<3 {
            let phone = "+49151\(Int.random(in: 1_000_000...9_999_999))"
            let up = try await testRequest(.POST, base + "/auth/signup", json: ["role": "driver", "phone": phone, "password": "driver-pass-\(index)", "name": "Page driver \(index)"])
            #expect(up.status == 201, "\(up.text)")
            let signedIn = try await testRequest(.POST, base + "/auth/login", json: ["phone": phone, "password": "driver-pass-\(index)"])
            let driverToken = try #require(signedIn.json["accessToken"] as? String)
            let at: [String: Double] = ["lat": 52.51 + Double(index) * 0.01, "lon": 13.39 + Double(index) * 0.01]
            #expect(try await testRequest(.POST, base + "/driver/online", json: at, headers: ["Authorization": "Bearer \(driverToken)"]).status == 200)
            #expect(try await testRequest(.POST, base + "/driver/locations", json: ["points": [at]], headers: ["Authorization": "Bearer \(driverToken)"]).status == 200)
            drivers.append(driverToken)
        }
        let online = try await testRequest(.GET, base + "/admin/dispatch/drivers", headers: asAdmin)
        let onlineCount = (online.json["drivers"] as? [[String: Any]] ?? []).filter { $0["lat"] != nil }.count
        #expect(onlineCount == 3, "\(online.text.prefix(500))")
        try await browser.wait(
            "a marker for each driver online", "return document.querySelectorAll('#map path.driver-marker').length === arguments[0] && document.querySelector('#drivers-count').dataset.count === String(arguments[0])",
            [onlineCount])

        // A broadcast from the page reaches the drivers online in its area, on their WebSocket: the first
        // driver's socket is opened in the page itself (the gateway's own origin).
        _ = try await browser.run(
            "window.heard = []; window.heardOpen = false; fetch('/api/v1/ws/ticket', {method: 'POST', headers: {Authorization: 'Bearer ' + arguments[0]}})"
                + ".then(r => r.json()).then(t => { const ws = new WebSocket('ws://' + location.host + '/ws?ticket=' + t.ticket);"
                + " ws.onopen = () => { window.heardOpen = true; }; ws.onmessage = m => window.heard.push(m.data); })",
            [drivers[0]])
        try await browser.wait("the driver's socket open", timeout: .seconds(10), "return window.heardOpen === true")
        try await browser.type("52.52", into: "#broadcast-lat")
        try await browser.type("13.40", into: "#broadcast-lon")
        try await browser.type("Road closed at the station: pick up on the north side", into: "#broadcast-text")
        try await browser.click("#broadcast-send")
        try await browser.wait(
            "the broadcast on the driver's socket", timeout: .seconds(10),
            "return window.heard.map(m => JSON.parse(m)).some(m => m.type === 'command.broadcast' && m.text.startsWith('Road closed'))")
        let broadcast = (try await testRequest(.GET, base + "/admin/command/audit", headers: asAdmin).json["entries"] as? [[String: Any]] ?? []).first
        #expect(broadcast?["action"] as? String == "drivers.broadcast")
        #expect((broadcast?["after"] as? [String: String])?["reached"] == "3", "the three drivers within 2 km: \(broadcast ?? [:])")

        // The demand cells: a hexagon on the map for each cell analytics' heatmap lists for the last hour.
        var cellsShown = -1, cellsListed = -2
        let cellsDeadline = ContinuousClock.now + .seconds(40)
        repeat {
            let heatmap = try await testRequest(.GET, base + "/admin/analytics/heatmap?kind=demand", headers: asAdmin)
            cellsListed = (heatmap.json["features"] as? [Any])?.count ?? -2
            cellsShown = try await browser.run(
                "return document.querySelectorAll('#map path.hex-cell').length === Number(document.body.dataset.hexes || -1) ? Number(document.body.dataset.hexes) : -1") as? Int ?? -1
            if cellsShown != cellsListed || cellsShown <= 0 { try await Task.sleep(for: .seconds(1)) }
        } while (cellsShown != cellsListed || cellsShown <= 0) && ContinuousClock.now < cellsDeadline
        #expect(cellsShown > 0 && cellsShown == cellsListed, "demand cells on the map \(cellsShown), in the heatmap \(cellsListed)")

        // The KPI tiles say what analytics' API says for the same hour (the snapshot's own range).
        var tilesMatch = false
        var lastSeen = ""
        let tilesDeadline = ContinuousClock.now + .seconds(40)
        repeat {
            let previous = try await browser.run("return document.body.dataset.snapshotAt") as? String ?? ""
            try await browser.wait("a new snapshot", timeout: .seconds(10), "return document.body.dataset.snapshotAt !== arguments[0]", [previous])
            let tiles = try await browser.run(
                "const v = n => document.querySelector('[data-kpi=' + n + ']').dataset.value; return [document.body.dataset.snapshotAt, v('orders'), v('couponClaims'), v('gmv'), v('cancellations')].join(' ')") as? String ?? ""
            let parts = tiles.split(separator: " ").map(String.init)
            guard parts.count == 5, let at = Double(parts[0]) else { continue }
            let minute = Int((at / 60).rounded(.down)) * 60
            let kpis = try await testRequest(.GET, base + "/admin/analytics/kpis?from=\(minute - 3540)&to=\(minute + 60)&step=minute", headers: asAdmin)
            let total = kpis.json["total"] as? [String: Any] ?? [:]
            let expected = [total["orders"], total["couponClaims"], total["gmvCents"], (total["cancellations"] as? [String: Any])?["total"]].map { "\($0 as? Int ?? -1)" }
            lastSeen = "page \(parts.dropFirst()) api \(expected)"
            tilesMatch = Array(parts.dropFirst()) == expected && (Int(parts[1]) ?? 0) > 0
        } while !tilesMatch && ContinuousClock.now < tilesDeadline
        #expect(tilesMatch, "KPI tiles against analytics: \(lastSeen)")

        // An ad campaign paused from the page: the ad API stops serving it.
        let now = Date().timeIntervalSince1970
        let campaign = try await testRequest(.POST, base + "/admin/ads/campaigns", json: [
            "name": "Page lever", "advertiser": "Kiosk 24", "placements": ["rider.waiting"],
            "creative": ["title": "Cold drinks", "text": "At the next corner"], "targeting": ["city": "Berlin"],
            "pricing": "cpm", "bidCents": 5000, "dailyBudgetCents": 1_000_000, "totalBudgetCents": 1_000_000,
            "frequencyCapPerDay": 1000, "pacing": "asap", "startsAt": now - 60, "endsAt": now + 3600,
        ] as [String: Any], headers: asAdmin.merging(["Idempotency-Key": UUID().uuidString]) { $1 })
        let campaignID = try #require(campaign.json["id"] as? String, "\(campaign.text)")
        #expect(try await testRequest(.POST, base + "/admin/ads/campaigns/\(campaignID)/resume", headers: asAdmin).json["state"] as? String == "active")
        let riderPhone = "+49152\(Int.random(in: 1_000_000...9_999_999))"
        _ = try await testRequest(.POST, base + "/auth/signup", json: ["role": "rider", "phone": riderPhone, "password": "rider-pass-word", "name": "Page rider"])
        let rider = try #require(try await testRequest(.POST, base + "/auth/login", json: ["phone": riderPhone, "password": "rider-pass-word"]).json["accessToken"] as? String)
        func servedOurs() async throws -> Bool {
            let ad = try await testRequest(.GET, base + "/ads?placement=rider.waiting&lat=52.52&lon=13.405", headers: ["Authorization": "Bearer \(rider)"])
            return ad.json["campaignID"] as? String == campaignID
        }
        var served = false
        for _ in 0..<60 where !served {
            served = try await servedOurs()
            if !served { try await Task.sleep(for: .milliseconds(250)) }
        }
        #expect(served, "the running campaign is served before the pause")
        let campaignRow = "#campaigns tr[data-campaign='\(campaignID)']"
        try await browser.wait("the campaign on the page", timeout: .seconds(20), "return !!document.querySelector(arguments[0])", [campaignRow + "[data-state=active]"])
        try await browser.click(campaignRow + " button.pause")
        try await browser.wait("the campaign paused", timeout: .seconds(10), "return !!document.querySelector(arguments[0])", [campaignRow + "[data-state=paused]"])
        #expect(try await testRequest(.GET, base + "/admin/ads/campaigns/\(campaignID)", headers: asAdmin).json["state"] as? String == "paused")
        var servedAfter = false
        try await Task.sleep(for: .seconds(2))
        for _ in 0..<20 where !servedAfter { servedAfter = try await servedOurs() }
        #expect(!servedAfter, "a campaign paused from the page is not served")
        try await browser.wait("the pause in the audit log", timeout: .seconds(10), "return !!document.querySelector(arguments[0])", ["#audit tr[data-action='ad-campaign.pause'][data-target='\(campaignID)']"])
        try await browser.screenshot(to: shots + "/4-city.png")

        // order-1, killed with SIGKILL mid-demo and restarted by the supervisor: Prometheus's
        // HailstormInstanceRestarted fired after the kill and resolved a minute later, on the page.
        let restartRow = "#alerts tr[data-name=HailstormInstanceRestarted][data-instance=order-1][data-state=resolved]"
        try await browser.wait("order-1's restart alert resolved on the page", timeout: .seconds(150), "return !!document.querySelector(arguments[0])", [restartRow])
        let restartCells = try await browser.run(
            "return [...document.querySelector(arguments[0]).querySelectorAll('td')].slice(3, 5).map(c => c.textContent).join('|')", [restartRow]) as? String ?? ""
        #expect(restartCells.split(separator: "|").count == 2, "fired and resolved times on the page: \(restartCells)")
        let restartAlert = (try await testRequest(.GET, base + "/admin/command/alerts?state=resolved", headers: asAdmin).json["alerts"] as? [[String: Any]] ?? [])
            .first { $0["name"] as? String == "HailstormInstanceRestarted" && ($0["labels"] as? [String: String])?["instance"] == "order-1" }
        let restartFired = restartAlert?["firedAt"] as? Double ?? 0, restartResolved = restartAlert?["resolvedAt"] as? Double ?? 0
        #expect(restartFired > killedAt && restartResolved > restartFired, "fired after the kill (\(killedAt)), then resolved: \(restartAlert ?? [:])")

        // One claim followed through the services from the page: a sampled traceparent leaves a line in the
        // gateway and in coupon, shown in the order they received it.
        let sale = try await testRequest(.POST, base + "/admin/coupons/campaigns", json: [
            "name": "Trace sale", "city": "Berlin", "kind": "amount", "amountOffCents": 100, "minimumFareCents": 0, "stock": 5,
            "perUserLimit": 1, "startsAt": now - 1, "endsAt": now + 3600,
        ] as [String: Any], headers: asAdmin)
        let saleID = try #require(sale.json["id"] as? String, "\(sale.text)")
        let traceID = (0..<32).map { _ in String(Int.random(in: 0..<16), radix: 16) }.joined()
        let claim = try await testRequest(.POST, base + "/coupons/campaigns/\(saleID)/claim", headers: [
            "Authorization": "Bearer \(rider)", "traceparent": "00-\(traceID)-00f067aa0ba902b7-01",
        ])
        #expect(claim.status == 201, "\(claim.text)")
        let claimRequest = try #require(claim.header("X-Request-ID"))
        var traced = ""
        let traceDeadline = ContinuousClock.now + .seconds(15)
        repeat {
            try await Task.sleep(for: .milliseconds(500))
            _ = try await browser.run("document.querySelector('#trace-id').value = ''")
            try await browser.type(traceID, into: "#trace-id")
            try await browser.click("#trace-show")
            try await Task.sleep(for: .milliseconds(300))
            traced = try await browser.run("return [...document.querySelectorAll('#trace tbody tr')].map(r => r.dataset.service).join(',')") as? String ?? ""
        } while traced != "gateway,coupon" && ContinuousClock.now < traceDeadline
        #expect(traced == "gateway,coupon", "the trace view shows the gateway's line, then coupon's: \(traced)")
        try await browser.screenshot(to: shots + "/5-trace.png")
        let byRequest = try await testRequest(.GET, base + "/admin/command/traces/\(claimRequest)", headers: asAdmin)
        let lines = byRequest.json["lines"] as? [[String: Any]] ?? []
        #expect(lines.map { $0["service"] as? String } == ["gateway", "coupon"], "by request id: \(byRequest.text.prefix(800))")
        #expect(lines.allSatisfy { $0["traceID"] as? String == traceID && $0["status"] as? Int == 201 })
        let paused = (try await testRequest(.GET, base + "/admin/command/audit", headers: asAdmin).json["entries"] as? [[String: Any]] ?? []).first
        #expect(paused?["action"] as? String == "ad-campaign.pause")
        #expect(paused?["before"] as? [String: String] == ["state": "active"])
        #expect(paused?["after"] as? [String: String] == ["state": "paused"])

        // The trace sale paused from the page: the same rider's next claim is refused as paused.
        let saleRow = "#coupon-campaigns tr[data-coupon-campaign='\(saleID)']"
        try await browser.wait("the sale on the page", timeout: .seconds(20), "return !!document.querySelector(arguments[0])", [saleRow + "[data-paused=false]"])
        try await browser.click(saleRow + " button.pause")
        try await browser.wait("the sale paused", timeout: .seconds(10), "return !!document.querySelector(arguments[0])", [saleRow + "[data-paused=true]"])
        let pausedClaim = try await testRequest(.POST, base + "/coupons/campaigns/\(saleID)/claim", headers: ["Authorization": "Bearer \(rider)"])
        #expect(pausedClaim.status == 409 && pausedClaim.json["type"] as? String == "urn:hailstorm:problem:campaign-paused", "\(pausedClaim.text)")

        // A driver suspended from the page: matching says so, the map greys their marker; restored, available again.
        let pageDrivers = try await testRequest(.GET, base + "/admin/dispatch/drivers", headers: asAdmin).json["drivers"] as? [[String: Any]] ?? []
        let suspendee = try #require(pageDrivers.first { $0["state"] as? String == "available" }?["driverID"] as? String)
        try await browser.type(suspendee, into: "#driver-id")
        try await browser.click("#driver-suspend")
        try await browser.wait("the driver greyed on the map", timeout: .seconds(10), "return document.querySelectorAll('#map path.driver-suspended').length === 1")
        #expect(try await testRequest(.GET, base + "/admin/dispatch/drivers/\(suspendee)", headers: asAdmin).json["state"] as? String == "suspended")
        let suspension = (try await testRequest(.GET, base + "/admin/command/audit", headers: asAdmin).json["entries"] as? [[String: Any]] ?? []).first
        #expect(suspension?["action"] as? String == "driver.suspend" && suspension?["target"] as? String == suspendee)
        #expect(suspension?["before"] as? [String: String] == ["state": "available"])
        #expect(suspension?["after"] as? [String: String] == ["state": "suspended"])
        // The surge lever from the page: its cell drawn on the map, as many boxes as order lists.
        try await browser.type("52.515", into: "#surge-lat")
        try await browser.type("13.395", into: "#surge-lon")
        _ = try await browser.run("document.querySelector('#surge-factor').value = '2.2'")
        try await browser.click("#surge-form button[type=submit]")
        // The page sends the lever in the background: order has it once it answers.
        var surgeCells = try await testRequest(.GET, base + "/admin/surge", headers: asAdmin)
        let surgeDeadline = ContinuousClock.now + .seconds(10)
        while (surgeCells.json["cells"] as? [Any])?.isEmpty != false, ContinuousClock.now < surgeDeadline {
            try await Task.sleep(for: .milliseconds(200))
            surgeCells = try await testRequest(.GET, base + "/admin/surge", headers: asAdmin)
        }
        let surgeCount = (surgeCells.json["cells"] as? [Any])?.count ?? -1
        #expect(surgeCount >= 1, "\(surgeCells.text)")
        try await browser.wait(
            "a box for each surge cell", timeout: .seconds(10),
            "return document.querySelectorAll('#map path.surge-cell').length === arguments[0] && document.body.dataset.surgeCells === String(arguments[0])", [surgeCount])
        try await browser.screenshot(to: shots + "/6-levers.png")
        try await browser.click("#driver-restore")
        try await browser.wait("the driver back on the map", timeout: .seconds(10), "return document.querySelectorAll('#map path.driver-suspended').length === 0")
        #expect(try await testRequest(.GET, base + "/admin/dispatch/drivers/\(suspendee)", headers: asAdmin).json["state"] as? String == "available")
        // Waiting orders and flagged trips: the page counts what matching and analytics list. With the page's
        // drivers gone offline, a ride waits, and is drawn at its pickup.
        for driverToken in drivers {
            #expect(try await testRequest(.POST, base + "/driver/offline", headers: ["Authorization": "Bearer \(driverToken)"]).status == 200)
        }
        let far = try await testRequest(.POST, base + "/rides", json: [
            "pickup": ["lat": 52.62, "lon": 13.22], "dropoff": ["lat": 52.60, "lon": 13.25],
        ] as [String: Any], headers: ["Authorization": "Bearer \(rider)", "Idempotency-Key": UUID().uuidString])
        let farRide = try #require(far.json["id"] as? String, "\(far.text)")
        try await browser.wait(
            "the waiting ride on the map", timeout: .seconds(15), "return Number(document.body.dataset.waiting || 0) >= 1")
        let waitingTotal = try await testRequest(.GET, base + "/admin/dispatch/waiting", headers: asAdmin).json["total"] as? Int ?? -1
        #expect(waitingTotal >= 1)
        let flaggedTotal = min(20, (try await testRequest(.GET, base + "/admin/analytics/anomalies", headers: asAdmin).json["trips"] as? [Any])?.count ?? -1)
        try await browser.wait(
            "the waiting orders and flagged trips counted", timeout: .seconds(10),
            "return document.body.dataset.waiting === String(arguments[0]) && document.body.dataset.flagged === String(arguments[1]) && document.querySelectorAll('#map path.waiting-order').length === arguments[0]",
            [waitingTotal, flaggedTotal])
        #expect(try await testRequest(.POST, base + "/rides/\(farRide)/cancel", json: ["reason": "test over"], headers: ["Authorization": "Bearer \(rider)"]).status == 200)
        await browser.quit()
        print("command centre screenshots: \(shots)")

        // Every process SIGKILLed once, one after another, under a small mixed load: everything comes back
        // and the audits still pass (nothing lost, nothing doubled).
        let chaosOut = runDir + "/load-chaos"
        let chaos = try await tool("hailstorm-load", [
            "chaos", "--rate", "20", "--duration", "20", "--coupons", "30", "--riders", "100", "--drivers", "40",
            "--out", chaosOut, "--run-dir", runDir,
        ])
        #expect(chaos.status == 0, "chaos: \(chaos.output.suffix(3000))")
        let chaosReport = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: chaosOut + "/report.json"))) as? [String: Any]
        let checks = (chaosReport?["audit"] as? [[String: Any]]) ?? []
        let cameBack = checks.first { ($0["name"] as? String)?.hasPrefix("every killed process") == true }
        #expect(cameBack?["passed"] as? Bool == true, "\(cameBack ?? [:])")
        #expect((cameBack?["detail"] as? String)?.contains("gateway-2") == true, "every instance was a victim: \(cameBack ?? [:])")

        let down = try await tool("hailstorm", ["down", "--run-dir", runDir])
        #expect(down.status == 0, "\(down.output)")
        let after = try await tool("hailstorm", ["status", "--run-dir", runDir])
        #expect(after.status == 3, "status after down says it is not running: \(after.output)")
    }
}

/// `hailstorm logs --trace ID` on a run folder's logs, without a running stack.
@Suite("hailstorm logs --trace")
struct TraceLogTests {
    @Test("one request's lines from every service's log, in time order; other requests', and lines that are not JSON, left out")
    func trace() async throws {
        let folder = try TestEnvironment.temporaryDirectory("trace-logs")
        try FileManager.default.createDirectory(atPath: folder + "/logs", withIntermediateDirectories: true)
        let id = "4bf92f3577b34da6a3ce929d0e0e4736"
        func line(_ ts: String, _ instance: String, _ msg: String, trace: String, extra: String = "") -> String {
            #"{"ts":"\#(ts)","instance":"\#(instance)","level":"info","msg":"\#(msg)","trace_id":"\#(trace)"\#(extra)}"#
        }
        try [
            line("2026-12-05T10:00:00.300Z", "gateway-1", "relayed", trace: id),
            line("2026-12-05T10:00:00.100Z", "gateway-1", "other request", trace: "0af7651916cd43dd8448eb211c80319c"),
            "not json but it names \(id)",
        ].joined(separator: "\n").write(toFile: folder + "/logs/gateway-1.log", atomically: true, encoding: .utf8)
        try [
            line("2026-12-05T10:00:00.200Z", "coupon-1", "claim granted", trace: id, extra: #","claim":"c-1""#),
            line("2026-12-05T10:00:00.250Z", "coupon-1", "claim stored", trace: "x", extra: #","request_id":"\#(id)""#),
        ].joined(separator: "\n").write(toFile: folder + "/logs/coupon-1.log", atomically: true, encoding: .utf8)

        func logs(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            let process = try TestProcess(
                executable: TestEnvironment.executablesDirectory.path + "/hailstorm", arguments: ["logs", "--run-dir", folder] + arguments,
                name: "logs")
            for _ in 0..<300 where process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
            return (process.terminate(), process.output())
        }
        let run = try await logs(["--trace", id])
        #expect(run.status == 0, "\(run.output)")
        let shown = run.output.split(separator: "\n").map(String.init)
        #expect(shown.count == 3, "\(shown)")
        #expect(shown.map { $0.split(separator: " ").first.map(String.init) ?? "" }
            == ["2026-12-05T10:00:00.200Z", "2026-12-05T10:00:00.250Z", "2026-12-05T10:00:00.300Z"])
        #expect(shown.first?.contains("coupon-1  info  claim granted  claim=c-1") == true, "\(shown)")
        #expect(shown.last?.contains("gateway-1  info  relayed") == true)

        let none = try await logs(["--trace", "nobody"])
        #expect(none.status != 0)
        #expect(none.output.contains("no line of any service's log"), "\(none.output)")
    }
}
