import Contracts
import Foundation
import HailKit
import HTTPTypes
import Hummingbird
import Logging
import RedisKit

/// The command centre's HTTP API (`CommandAPI`): admin only.
///
/// A lever acts with the operator's own token, forwarded to the service that owns what it changes (so
/// the command centre can do nothing its operator could not), and is written to the audit log with what
/// that service answered before and after. A lever sent again with the same `Idempotency-Key` answers
/// the first one's entry without acting again.
struct CommandController: Sendable {
    let store: CommandStore
    let clients: ServiceClient
    /// nil: no Prometheus configured (`command.prometheus.url`); the board is empty and says so.
    let prometheus: PrometheusReader?
    let alerts: AlertWatch
    let live: LiveFeed
    let redis: RedisClient

    func register(on router: some RouterMethods<HailRequestContext>) {
        router.on(CommandAPI.live) { _, _, context in
            live.watch(try context.requireRole(.admin).userID)
        }
        router.on(CommandAPI.board) { _, _, context in
            _ = try context.requireRole(.admin)
            guard let prometheus else {
                return CommandAPI.Board(at: Date().timeIntervalSince1970, prometheus: "not configured", instances: [])
            }
            do {
                return try await prometheus.board()
            } catch let error as PrometheusReader.Unreachable {
                throw Problem.unavailable(error.description, retryAfterSeconds: 5)
            }
        }
        router.on(CommandAPI.alerts) { _, request, context in
            _ = try context.requireRole(.admin)
            let state = request.uri.queryParameters.get("state") ?? "all"
            guard ["firing", "resolved", "all"].contains(state) else {
                throw Problem.invalidField("state", "must be firing, resolved or all")
            }
            let limit = try Self.limit(request, default: 200)
            return CommandAPI.AlertList(
                alerts: try await store.alerts(state: state == "all" ? nil : state, limit: limit), checkedAt: alerts.checkedAt)
        }
        router.on(CommandAPI.acknowledge) { _, request, context in
            let operator_ = try context.requireRole(.admin)
            guard let text = context.parameters.get("id"), let id = Int64(text), id > 0 else {
                throw Problem.invalidField("id", "must be an alert id (a whole number)")
            }
            guard let (before, after) = try await store.acknowledge(id: id, actor: operator_.userID, now: Date().timeIntervalSince1970) else {
                throw Problem.notFound("There is no alert \(id)")
            }
            if before.acknowledgedAt == nil {
                _ = try await store.record(
                    actor: operator_.userID, action: "alert.acknowledge", target: "\(after.name) #\(after.id)",
                    before: ["acknowledged": "no", "state": before.state],
                    after: ["acknowledged": "yes", "state": after.state], requestID: context.requestID, idempotencyKey: nil)
            }
            return after
        }
        router.on(CommandAPI.trace) { _, _, context in
            _ = try context.requireRole(.admin)
            guard let id = context.parameters.get("id"), (1...128).contains(id.count),
                id.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) })
            else {
                throw Problem.invalidField("id", "must be a trace id or a request id (1 to 128 letters, digits, '-', '_' or '.')")
            }
            return CommandAPI.Trace(id: id, lines: try await TraceLines.lines(for: id, redis: redis))
        }
        router.on(CommandAPI.audit) { _, request, context in
            _ = try context.requireRole(.admin)
            return CommandAPI.AuditLog(entries: try await store.audit(limit: try Self.limit(request, default: 100)))
        }
        router.on(CommandAPI.pauseAdCampaign) { _, request, context in
            try await adLever(AdAPI.pause, action: "ad-campaign.pause", request: request, context: context)
        }
        router.on(CommandAPI.resumeAdCampaign) { _, request, context in
            try await adLever(AdAPI.resume, action: "ad-campaign.resume", request: request, context: context)
        }
        router.on(CommandAPI.pauseCouponCampaign) { _, request, context in
            try await couponLever(CouponAPI.pause, action: "coupon-campaign.pause", request: request, context: context)
        }
        router.on(CommandAPI.resumeCouponCampaign) { _, request, context in
            try await couponLever(CouponAPI.resume, action: "coupon-campaign.resume", request: request, context: context)
        }
        router.on(CommandAPI.suspendDriver) { _, request, context in
            try await driverLever(MatchingAPI.suspend, action: "driver.suspend", request: request, context: context)
        }
        router.on(CommandAPI.restoreDriver) { _, request, context in
            try await driverLever(MatchingAPI.restore, action: "driver.restore", request: request, context: context)
        }
        router.on(CommandAPI.setSurge) { body, request, context in
            let (operator_, headers, key) = try operatorCall(request, context)
            if let key, let done = try await store.entry(idempotencyKey: key) { return done }
            guard body.at.isValid else { throw Problem.invalidField("at", "needs lat in -90…90 and lon in -180…180") }
            guard body.factor.isFinite, (1...10).contains(body.factor) else { throw Problem.invalidField("factor", "must be from 1 to 10") }
            let set = try await clients.call(
                OrderAPI.setSurge, OrderAPI.SurgeSetting(at: body.at, factor: body.factor), headers: headers, context: context.callContext)
            return try await store.record(
                actor: operator_.userID, action: "surge.set", target: set.cell ?? "\(body.at.lat),\(body.at.lon)",
                before: ["factor": Self.factor(set.previous)], after: ["factor": Self.factor(set.factor)],
                requestID: context.requestID, idempotencyKey: key)
        }
        router.on(CommandAPI.broadcast) { body, request, context in
            let (operator_, headers, key) = try operatorCall(request, context)
            if let key, let done = try await store.entry(idempotencyKey: key) { return done }
            guard body.at.isValid else { throw Problem.invalidField("at", "needs lat in -90…90 and lon in -180…180") }
            guard body.radiusKm.isFinite, (0.1...50).contains(body.radiusKm) else {
                throw Problem.invalidField("radiusKm", "must be from 0.1 to 50 km")
            }
            let text = body.text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard (1...500).contains(text.count), !text.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) }) else {
                throw Problem.invalidField("text", "must be 1 to 500 characters without control characters")
            }
            let online = MatchingAPI.DriverList.merged(
                try await clients.callEveryShard(MatchingAPI.drivers, NoContent(), headers: headers, context: context.callContext)
            ).drivers
            let reached = online.filter { driver in
                guard driver.state != "offline", let lat = driver.lat, let lon = driver.lon else { return false }
                return body.at.distanceKm(to: GeoPoint(lat: lat, lon: lon)) <= body.radiusKm
            }
            let message = String(
                decoding: try JSONBody.encoder.encode(CommandAPI.BroadcastMessage(text: text, at: Date().timeIntervalSince1970)), as: UTF8.self)
            for driver in reached {
                try await redis.send("PUBLISH", PushMessage.channel(user: driver.driverID), message)
            }
            return try await store.record(
                actor: operator_.userID, action: "drivers.broadcast",
                target: String(format: "%.4f,%.4f within %.1f km", body.at.lat, body.at.lon, body.radiusKm),
                before: ["driversOnline": String(online.count)], after: ["reached": String(reached.count), "text": text],
                requestID: context.requestID, idempotencyKey: key)
        }
        router.on(CommandAPI.runSettlement) { _, request, context in
            let (operator_, headers, key) = try operatorCall(request, context)
            if let key, let done = try await store.entry(idempotencyKey: key) { return done }
            let last = try await clients.call(SettlementAPI.batches, NoContent(), query: ["limit": "1"], headers: headers, context: context.callContext)
            let batch = try await clients.call(SettlementAPI.run, .init(trigger: "command"), headers: headers, context: context.callContext)
            var before = ["lastBatch": "none"]
            if let previous = last.batches.first {
                before = ["lastBatch": previous.id, "lastBatchAt": Self.time(previous.startedAt)]
            }
            return try await store.record(
                actor: operator_.userID, action: "settlement.run", target: batch.id, before: before,
                after: [
                    "lastBatch": batch.id, "lastBatchAt": Self.time(batch.startedAt), "entries": String(batch.entries),
                    "payouts": String(batch.payouts.count), "totalCents": String(batch.totalCents),
                ],
                requestID: context.requestID, idempotencyKey: key)
        }
    }

    /// Pauses or resumes an ad campaign in the ad service; the audit entry holds its state before and after.
    private func adLever(
        _ endpoint: Endpoint<NoContent, AdAPI.Campaign>, action: String, request: Request, context: HailRequestContext
    ) async throws -> CommandAPI.AuditEntry {
        try await ownedLever(request, context, action: action, what: "an ad campaign id", read: AdAPI.campaign, act: endpoint) { id, before, after in
            (id, ["state": before.state.rawValue], ["state": after.state.rawValue])
        }
    }

    /// Pauses or resumes a coupon campaign's claims in the coupon service.
    private func couponLever(
        _ endpoint: Endpoint<NoContent, CouponAPI.Campaign>, action: String, request: Request, context: HailRequestContext
    ) async throws -> CommandAPI.AuditEntry {
        try await ownedLever(request, context, action: action, what: "a coupon campaign id", read: CouponAPI.campaign, act: endpoint) {
            id, before, after in
            let state = { (campaign: CouponAPI.Campaign) in campaign.paused ? "paused" : "open" }
            return ("\(after.name) (\(id))", ["claims": state(before)], ["claims": state(after), "remaining": after.remaining.map(String.init) ?? "unknown"])
        }
    }

    /// Suspends a driver from dispatch, or restores them, in matching.
    private func driverLever(
        _ endpoint: Endpoint<NoContent, MatchingAPI.DriverStatus>, action: String, request: Request, context: HailRequestContext
    ) async throws -> CommandAPI.AuditEntry {
        // Matching split by city: every city's instance suspends or restores the driver (so a driver who
        // drives into another city stays suspended), and the one that knows them says their state.
        try await ownedLever(
            request, context, action: action, what: "a driver id", maximum: 100, read: MatchingAPI.driver, act: endpoint,
            everyShard: MatchingAPI.DriverStatus.merged
        ) { id, before, after in (id, ["state": before.state], ["state": after.state]) }
    }

    /// A lever on the thing the path's `{id}` names, in the service that owns it: read, acted on with the
    /// operator's token, and written to the audit log as `entry` describes the answers before and after.
    private func ownedLever<Owned>(
        _ request: Request, _ context: HailRequestContext, action: String, what: String, maximum: Int = 128,
        read: Endpoint<NoContent, Owned>, act: Endpoint<NoContent, Owned>, everyShard: (([Owned]) -> Owned)? = nil,
        entry: (_ id: String, _ before: Owned, _ after: Owned) -> (target: String, before: [String: String], after: [String: String])
    ) async throws -> CommandAPI.AuditEntry {
        let (operator_, headers, key) = try operatorCall(request, context)
        if let key, let done = try await store.entry(idempotencyKey: key) { return done }
        let id = try Self.target(context, what, maximum: maximum)
        let before: Owned
        let after: Owned
        if let merge = everyShard {
            // Asked of every shard, the answers merged.
            before = merge(try await clients.callEveryShard(read, NoContent(), parameters: ["id": id], headers: headers, context: context.callContext))
            after = merge(try await clients.callEveryShard(act, NoContent(), parameters: ["id": id], headers: headers, context: context.callContext))
        } else {
            // A split service's owner of the id (nil: the service is not split).
            let shard = try clients.shard(of: read.service, id: id)
            before = try await clients.call(read, NoContent(), parameters: ["id": id], headers: headers, shard: shard, context: context.callContext)
            after = try await clients.call(act, NoContent(), parameters: ["id": id], headers: headers, shard: shard, context: context.callContext)
        }
        let described = entry(id, before, after)
        return try await store.record(
            actor: operator_.userID, action: action, target: described.target, before: described.before, after: described.after,
            requestID: context.requestID, idempotencyKey: key)
    }

    /// The path's `id`, checked before it is sent on.
    static func target(_ context: HailRequestContext, _ what: String, maximum: Int = 128) throws -> String {
        guard let id = context.parameters.get("id"), (1...maximum).contains(id.count),
            !id.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) })
        else {
            throw Problem.invalidField("id", "must be \(what) (1 to \(maximum) characters)")
        }
        return id
    }

    /// The operator (an admin), the header that makes a call as them (their own token), and the request's
    /// Idempotency-Key.
    private func operatorCall(_ request: Request, _ context: HailRequestContext) throws -> (Identity, HTTPFields, String?) {
        let operator_ = try context.requireRole(.admin)
        guard let authorization = request.headers[.authorization] else {
            throw Problem.unauthorized("Sign in and send the access token as a Bearer token")
        }
        let key = try HailHeaders.idempotencyKey(in: request.headers)
        return (operator_, [.authorization: authorization], key.map { "\(operator_.userID):\($0)" })
    }

    static func limit(_ request: Request, default fallback: Int) throws -> Int {
        try request.uri.queryParameters.get("limit").map { text -> Int in
            guard let value = Int(text), (1...1000).contains(value) else {
                throw Problem.invalidField("limit", "must be a whole number from 1 to 1000")
            }
            return value
        } ?? fallback
    }

    static func factor(_ value: Double?) -> String {
        value.map { String(format: "%.2f", $0) } ?? "unknown"
    }

    static func time(_ seconds: Double) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: seconds))
    }
}
