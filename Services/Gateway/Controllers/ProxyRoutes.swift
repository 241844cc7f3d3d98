import Contracts
import Foundation
import HailKit
import HTTPTypes
import Hummingbird
import NIOCore

/// A route the gateway only relays: who may call it and which service endpoint answers it.
///
/// The relayed routes are data, not handlers, because two paths serve them from the same table: the
/// router (`register`), which answers everything, and the relaying channel handler (`RelayHandler`),
/// which answers the common case — a remembered token, a budget known here, a listed instance — without
/// the router's per-request machinery, and hands everything else to the router.
struct ProxyRoute: Sendable {
    /// Where the callee's `{id}` comes from.
    enum ID: Sendable {
        /// The gateway path's own `{id}`.
        case path
        /// The caller's user id (a driver's own status and locations).
        case caller
        /// The callee's path has no `{id}`.
        case none
    }

    let method: HTTPRequest.Method
    /// Under `/api/v1`, as the router spells it: `coupons/campaigns/{id}/claim`.
    let path: String
    /// The roles that may call it; empty: any signed-in account.
    let roles: [Role]
    let id: ID
    /// Query parameters passed on.
    let query: [String]
    let service: String
    let calleeMethod: HTTPRequest.Method
    let isIdempotent: Bool
    /// The callee's path for an `{id}` (nil for `.none`).
    let calleePath: @Sendable (String?) -> String
    /// Checks a body against the endpoint's request type (throws its 400 problem); nil: the endpoint takes
    /// no body.
    let checkBody: (@Sendable (ByteBuffer) throws -> Void)?
    /// Requests of this route that the relay gathers into one call (nil: each is relayed on its own).
    enum Gathered: Sendable {
        /// Drivers' fixes, handed to matching in batches (`FixBatches`).
        case driverLocations
    }
    var gathered: Gathered? = nil
    /// Which instance of a service split into shards (`Shards`) answers.
    enum Sharding: Sendable {
        /// Any instance: what is asked is no one shard's (a quote, the surge map).
        case any
        /// The owner of the path's `{id}` (ids carry their shard).
        case id
        /// The shard of the caller's user id: where what they create lives (a rider's orders), so a
        /// request repeated with its Idempotency-Key meets the first one.
        case caller
        /// The shard of the request's Idempotency-Key, so a repeat meets the first request; any instance
        /// when it has none. For what an operator creates and then names by the id it gets back (a coupon
        /// campaign): spread over the shards, not piled on the operator's.
        case idempotencyKey
        /// Every shard, their answers merged into one (a listing: each shard's page, one page made of them,
        /// given the request's query).
        case all(merge: @Sendable (_ answers: [ByteBuffer], _ query: [String: String]) throws -> ByteBuffer)
        /// The shard that what the request carries names (an ad's place, by its city; a token, by the
        /// campaign it names; a new campaign, by its city): read from the query passed on and the body.
        /// Nil, or an id naming no shard: any instance, which refuses the request with the reason (a
        /// forged token) or answers it (a place in no city has no ad).
        /// With `orFound`, a request that names none goes to every shard, as `.found` (a driver going online
        /// where they last sent a fix, which only that city's instance of matching knows).
        case derived(
            @Sendable (_ query: [String: String], _ body: ByteBuffer?) -> ShardKey?,
            orFound: (@Sendable (_ answers: [ByteBuffer], _ query: [String: String]) throws -> ByteBuffer)? = nil)
        /// Every shard, the answers that succeeded merged into one; when none did, the first refusal (what one
        /// city's instance of matching knows of a driver, where the others may refuse).
        case found(merge: @Sendable (_ answers: [ByteBuffer], _ query: [String: String]) throws -> ByteBuffer)
    }
    /// What a request names that places it on a shard.
    enum ShardKey: Sendable, Equatable {
        /// An entity's id (`s<k>-…`): its owner.
        case id(String)
        /// A key hashed over the shards (`Shards.shard(forKey:count:)`): its owner.
        case key(String)
        /// A shard by its number (matching's city of a place).
        case index(Int)
    }
    var sharding: Sharding = .any
    /// For what an app shows only when it can (an ad): the longest the service may take, after which —
    /// or when it fails — the app gets a 204 and nothing else. Nil: the service's answer, whatever it is.
    var optionalWithin: Duration? = nil

    /// `method path` relayed to `endpoint`, for `roles`.
    static func relay<Req, Res>(
        _ method: HTTPRequest.Method, _ path: String, to endpoint: Endpoint<Req, Res>, roles: [Role], id: ID? = nil,
        query: [String] = [], optionalWithin: Duration? = nil, gathered: Gathered? = nil, sharding: Sharding? = nil
    ) -> ProxyRoute {
        let id = id ?? (path.contains("{id}") ? .path : .none)
        precondition(endpoint.parameterNames.count == (id == .none ? 0 : 1), "\(path): one {id} in, one out")
        let name = endpoint.parameterNames.first
        // A path id arrives as the client wrote it, percent-encoded (the router's parameter and the
        // relay's segment are both the raw path); the service gets it encoded once, not twice. An id of
        // unreserved characters only (a UUID, as nearly every id is) reads the same decoded and encoded:
        // it goes between the path's two halves, split here once, as it is (decoding and encoding each id
        // cost the gateway 5 % of its CPU in a flash sale).
        let template = endpoint.path
        let halves = name.flatMap { name in
            template.range(of: "{\(name)}").map { (before: String(template[..<$0.lowerBound]), after: String(template[$0.upperBound...])) }
        }
        let calleePath: @Sendable (String?) -> String = { value in
            guard let name, let value else { return endpoint.path() }
            if let halves, value.utf8.allSatisfy(\.isUnreservedInURI) { return halves.before + value + halves.after }
            return endpoint.path([name: value.removingPercentEncoding ?? value])
        }
        var checkBody: (@Sendable (ByteBuffer) throws -> Void)? = nil
        if Req.self != NoContent.self {
            checkBody = { buffer in _ = try JSONBody.decode(Req.self, from: JSONBody.requireBody(buffer)) }
        }
        return ProxyRoute(
            method: method, path: path, roles: roles, id: id, query: query, service: endpoint.service,
            calleeMethod: endpoint.method, isIdempotent: endpoint.isIdempotent, calleePath: calleePath, checkBody: checkBody,
            gathered: gathered, sharding: sharding ?? (id == .path ? .id : .any), optionalWithin: optionalWithin)
    }

    /// Where a request of this route goes when its service is split: one shard (nil: any instance, the
    /// service not being split or the route being no one shard's), or every shard with their answers
    /// merged. A 404 problem for an `{id}` naming a shard the service does not have.
    enum Target {
        case shard(Int?)
        /// `refusalsAllowed`: merged from the shards that succeeded (`.found`), not only when all did.
        case every(merge: @Sendable ([ByteBuffer], [String: String]) throws -> ByteBuffer, refusalsAllowed: Bool = false)
    }

    func target(
        id: String?, caller: String, idempotencyKey: String?, query: @autoclosure () -> [String: String] = [:], body: ByteBuffer? = nil,
        clients: ServiceClient
    ) throws -> Target {
        guard clients.shardCount(of: service) > 1 else { return .shard(nil) }
        switch sharding {
        case .any: return .shard(nil)
        case .id: return .shard(try id.flatMap { try clients.shard(of: service, id: $0) })
        case .caller: return .shard(clients.shard(of: service, key: caller))
        case .idempotencyKey: return .shard(idempotencyKey.flatMap { clients.shard(of: service, key: $0) })
        case .all(let merge): return .every(merge: merge)
        case .found(let merge): return .every(merge: merge, refusalsAllowed: true)
        case .derived(let read, let orFound):
            switch read(query(), body) {
            case .id(let named): return .shard((try? clients.shard(of: service, id: named)) ?? nil)
            case .key(let key): return .shard(clients.shard(of: service, key: key))
            case .index(let index): return .shard((0..<clients.shardCount(of: service)).contains(index) ? index : nil)
            case nil: return orFound.map { .every(merge: $0, refusalsAllowed: true) } ?? .shard(nil)
            }
        }
    }

    /// `name=value&…` as a dictionary, each part percent-decoded (a name given twice: its last value).
    static func queryPairs(_ text: some StringProtocol) -> [String: String] {
        var pairs: [String: String] = [:]
        for part in text.split(separator: "&") {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = pair.first else { continue }
            let value = pair.count == 2 ? String(pair[1]) : ""
            pairs[String(name).removingPercentEncoding ?? String(name)] = value.removingPercentEncoding ?? value
        }
        return pairs
    }

    /// The caller's identity when its role may call this route; a 401 or 403 problem otherwise.
    func admit(_ context: HailRequestContext) throws -> Identity {
        roles.isEmpty ? try context.requireIdentity() : try context.requireRole(roles)
    }

    func allows(_ role: Role) -> Bool { roles.isEmpty || roles.contains(role) }

    /// Every relayed route; `adCities`: the cities the ad service sells in (`ad.cities`), whose shards
    /// own their places.
    /// `matchingCities`: matching's, when it is split by city (`matching.cities`): a driver's fixes and
    /// going online go to the instance of the place's city, what is asked about a driver to every city.
    static func all(
        adCities: CityCircles = try! CityCircles(specification: CityCircles.defaultSpecification), matchingCities: CityCircles? = nil
    ) -> [ProxyRoute] { [
        // Signed-in accounts.
        relay(.get, "me", to: LoginAPI.user, roles: [], id: .caller),
        // Coupons.
        relay(.get, "coupons/campaigns", to: CouponAPI.campaigns, roles: [], sharding: .all(merge: merged(CouponAPI.CampaignList.merged))),
        relay(.get, "coupons/campaigns/{id}", to: CouponAPI.campaign, roles: []),
        relay(.post, "coupons/campaigns/{id}/claim", to: CouponAPI.claim, roles: [.rider]),
        relay(.get, "coupons/wallet", to: CouponAPI.wallet, roles: [.rider], sharding: .all(merge: merged(CouponAPI.Wallet.merged))),
        relay(.post, "admin/coupons/campaigns", to: CouponAPI.createCampaign, roles: [.admin], sharding: .idempotencyKey),
        relay(.get, "admin/coupons/campaigns/{id}/audit", to: CouponAPI.audit, roles: [.admin]),
        relay(.post, "admin/coupons/campaigns/{id}/pause", to: CouponAPI.pause, roles: [.admin]),
        relay(.post, "admin/coupons/campaigns/{id}/resume", to: CouponAPI.resume, roles: [.admin]),
        // Riders' rides.
        relay(.post, "rides/quote", to: OrderAPI.quote, roles: [.rider]),
        relay(.post, "rides", to: OrderAPI.create, roles: [.rider], sharding: .caller),
        relay(.get, "rides", to: OrderAPI.list, roles: [.rider, .driver], query: ["cursor", "limit"], sharding: .all(merge: mergeOrderPages)),
        relay(.get, "rides/{id}", to: OrderAPI.order, roles: [.rider, .driver, .admin]),
        relay(.post, "rides/{id}/cancel", to: OrderAPI.cancel, roles: [.rider, .driver]),
        // Drivers.
        // Matching split by city (`matching.cities`): a place goes to its city's instance; a driver is asked of
        // every city, the one that knows them answering.
        relay(
            .post, "driver/online", to: MatchingAPI.online, roles: [.driver], id: .caller,
            sharding: .derived(driverPlace(in: matchingCities), orFound: merged(MatchingAPI.DriverStatus.merged))),
        relay(.post, "driver/offline", to: MatchingAPI.offline, roles: [.driver], id: .caller, sharding: .all(merge: merged(MatchingAPI.DriverStatus.merged))),
        relay(
            .post, "driver/locations", to: MatchingAPI.locations, roles: [.driver], id: .caller, gathered: .driverLocations,
            sharding: .derived(fixesPlace(in: matchingCities))),
        relay(.get, "driver/status", to: MatchingAPI.driver, roles: [.driver], id: .caller, sharding: .all(merge: merged(MatchingAPI.DriverStatus.merged))),
        relay(.post, "driver/offers/{id}/grab", to: GrabAPI.grab, roles: [.driver]),
        relay(.post, "driver/rides/{id}/arrive", to: OrderAPI.arrive, roles: [.driver]),
        relay(.post, "driver/rides/{id}/start", to: OrderAPI.start, roles: [.driver]),
        relay(.post, "driver/rides/{id}/complete", to: OrderAPI.complete, roles: [.driver]),
        // Operators' dispatch.
        relay(.put, "admin/surge", to: OrderAPI.setSurge, roles: [.admin]),
        relay(.get, "admin/surge", to: OrderAPI.surgeMap, roles: [.admin]),
        relay(.get, "admin/dispatch/stats", to: MatchingAPI.stats, roles: [.admin], sharding: .all(merge: merged(MatchingAPI.DispatchStats.merged))),
        relay(.get, "admin/dispatch/drivers", to: MatchingAPI.drivers, roles: [.admin], sharding: .all(merge: merged(MatchingAPI.DriverList.merged))),
        relay(.get, "admin/dispatch/drivers/{id}", to: MatchingAPI.driver, roles: [.admin], sharding: .all(merge: merged(MatchingAPI.DriverStatus.merged))),
        relay(
            .post, "admin/dispatch/drivers/{id}/suspend", to: MatchingAPI.suspend, roles: [.admin],
            sharding: .all(merge: merged(MatchingAPI.DriverStatus.merged))),
        relay(
            .post, "admin/dispatch/drivers/{id}/restore", to: MatchingAPI.restore, roles: [.admin],
            sharding: .all(merge: merged(MatchingAPI.DriverStatus.merged))),
        relay(.get, "admin/dispatch/waiting", to: MatchingAPI.waiting, roles: [.admin], query: ["limit"], sharding: .all(merge: mergeWaiting)),
        relay(.get, "admin/grabs/{id}", to: GrabAPI.audit, roles: [.admin]),
        // Money.
        relay(.post, "payments", to: PaymentAPI.pay, roles: [.rider], sharding: .caller),
        relay(.get, "payments/{id}", to: PaymentAPI.payment, roles: [.rider, .driver, .admin]),
        relay(.post, "admin/payments/{id}/refund", to: PaymentAPI.refund, roles: [.admin]),
        relay(.get, "admin/ledger", to: PaymentAPI.ledger, roles: [.admin], query: ["account"], sharding: .all(merge: merged(PaymentAPI.Ledger.merged))),
        relay(.get, "admin/settlements", to: SettlementAPI.batches, roles: [.admin], query: ["limit"]),
        relay(.get, "admin/reconciliation", to: SettlementAPI.reconciliation, roles: [.admin]),
        // Ads: the app shows one when it comes quickly, and nothing otherwise.
        // A split ad service: each city's campaigns on one shard (`AdAPI.shard(ofCity:count:)`).
        relay(
            .get, "ads", to: AdAPI.serve, roles: [.rider, .driver], query: ["placement", "lat", "lon"], optionalWithin: adDeadline,
            sharding: .derived(adPlace(in: adCities))),
        relay(.post, "ads/impressions", to: AdAPI.impression, roles: [.rider, .driver], sharding: .derived(adToken)),
        relay(.post, "ads/clicks", to: AdAPI.click, roles: [.rider, .driver], sharding: .derived(adToken)),
        relay(.post, "admin/ads/campaigns", to: AdAPI.createCampaign, roles: [.admin], sharding: .derived(adCampaignCity)),
        relay(.get, "admin/ads/campaigns", to: AdAPI.campaigns, roles: [.admin], sharding: .all(merge: merged(AdAPI.CampaignList.merged))),
        relay(.get, "admin/ads/campaigns/{id}", to: AdAPI.campaign, roles: [.admin]),
        relay(.post, "admin/ads/campaigns/{id}/pause", to: AdAPI.pause, roles: [.admin]),
        relay(.post, "admin/ads/campaigns/{id}/resume", to: AdAPI.resume, roles: [.admin]),
        relay(.post, "admin/ads/campaigns/{id}/end", to: AdAPI.end, roles: [.admin]),
        relay(.get, "admin/ads/campaigns/{id}/report", to: AdAPI.report, roles: [.admin]),
        // Analytics.
        relay(.get, "admin/analytics/kpis", to: AnalyticsAPI.kpis, roles: [.admin], query: ["from", "to", "step", "city", "cell"]),
        relay(.get, "admin/analytics/funnel", to: AnalyticsAPI.funnel, roles: [.admin], query: ["from", "to", "city"]),
        relay(.get, "admin/analytics/heatmap", to: AnalyticsAPI.heatmap, roles: [.admin], query: ["kind", "from", "to", "city"]),
        relay(.get, "admin/analytics/trips/{id}/path", to: AnalyticsAPI.tripPath, roles: [.admin], query: ["tolerance"]),
        relay(.get, "admin/analytics/anomalies", to: AnalyticsAPI.anomalies, roles: [.admin], query: ["from", "to"]),
        relay(.get, "admin/analytics/od", to: AnalyticsAPI.od, roles: [.admin], query: ["from", "to", "top"]),
        relay(.post, "admin/analytics/rebuild", to: AnalyticsAPI.rebuild, roles: [.admin]),
        // The command centre.
        relay(.get, "admin/command/board", to: CommandAPI.board, roles: [.admin]),
        relay(.post, "admin/command/live", to: CommandAPI.live, roles: [.admin]),
        relay(.get, "admin/command/alerts", to: CommandAPI.alerts, roles: [.admin], query: ["state", "limit"]),
        relay(.post, "admin/command/alerts/{id}/acknowledge", to: CommandAPI.acknowledge, roles: [.admin]),
        relay(.get, "admin/command/audit", to: CommandAPI.audit, roles: [.admin], query: ["limit"]),
        relay(.get, "admin/command/traces/{id}", to: CommandAPI.trace, roles: [.admin]),
        relay(.post, "admin/command/levers/ad-campaigns/{id}/pause", to: CommandAPI.pauseAdCampaign, roles: [.admin]),
        relay(.post, "admin/command/levers/ad-campaigns/{id}/resume", to: CommandAPI.resumeAdCampaign, roles: [.admin]),
        relay(.put, "admin/command/levers/surge", to: CommandAPI.setSurge, roles: [.admin]),
        relay(.post, "admin/command/levers/coupon-campaigns/{id}/pause", to: CommandAPI.pauseCouponCampaign, roles: [.admin]),
        relay(.post, "admin/command/levers/coupon-campaigns/{id}/resume", to: CommandAPI.resumeCouponCampaign, roles: [.admin]),
        relay(.post, "admin/command/levers/drivers/{id}/suspend", to: CommandAPI.suspendDriver, roles: [.admin]),
        relay(.post, "admin/command/levers/drivers/{id}/restore", to: CommandAPI.restoreDriver, roles: [.admin]),
        relay(.post, "admin/command/levers/settlement-batches", to: CommandAPI.runSettlement, roles: [.admin]),
        relay(.post, "admin/command/levers/broadcasts", to: CommandAPI.broadcast, roles: [.admin]),
    ] }

    /// Matching's shard for a driver going online at the body's place: its city's; none when the body has
    /// no place (every city is asked).
    static func driverPlace(in cities: CityCircles?) -> @Sendable ([String: String], ByteBuffer?) -> ShardKey? {
        { _, body in
            guard let cities, let body, let online = try? JSONBody.decode(MatchingAPI.GoOnline.self, from: body),
                let lat = online.lat, let lon = online.lon
            else { return nil }
            let point = GeoPoint(lat: lat, lon: lon)
            return point.isValid ? .index(MatchingAPI.shard(of: point, in: cities)) : nil
        }
    }

    /// Matching's shard for a driver's fixes: the city of the latest.
    static func fixesPlace(in cities: CityCircles?) -> @Sendable ([String: String], ByteBuffer?) -> ShardKey? {
        { _, body in
            guard let cities, let body, let fixes = try? JSONBody.decode(MatchingAPI.Locations.self, from: body) else { return nil }
            return MatchingAPI.shard(ofFixes: fixes.points, in: cities).map(ShardKey.index)
        }
    }

    /// Every city's waiting orders, the oldest `limit` (500) of them.
    @Sendable static func mergeWaiting(_ answers: [ByteBuffer], query: [String: String]) throws -> ByteBuffer {
        let lists = try answers.map { try JSONBody.decoder.decode(MatchingAPI.WaitingOrders.self, from: Data($0.readableBytesView)) }
        let limit = query["limit"].flatMap { Int($0) } ?? 500
        return ByteBuffer(bytes: try JSONBody.encoder.encode(MatchingAPI.WaitingOrders.merged(lists, limit: limit)))
    }

    /// A split ad service's shard for an ad at the query's place: its city's (none outside every city).
    static func adPlace(in cities: CityCircles) -> @Sendable ([String: String], ByteBuffer?) -> ShardKey? {
        { query, _ in
            guard let lat = query["lat"].flatMap(Double.init), let lon = query["lon"].flatMap(Double.init) else { return nil }
            let point = GeoPoint(lat: lat, lon: lon)
            guard point.isValid, let city = cities.city(at: point) else { return nil }
            return .key(city.name)
        }
    }

    /// A split ad service's shard for an impression or click: the one owning the campaign its token names.
    @Sendable static func adToken(_ query: [String: String], _ body: ByteBuffer?) -> ShardKey? {
        guard let body, let request = try? JSONBody.decode(AdAPI.TokenRequest.self, from: body),
            let campaign = AdAPI.campaignID(ofToken: request.token)
        else { return nil }
        return .id(campaign)
    }

    /// A split ad service's shard for a new campaign: its city's.
    @Sendable static func adCampaignCity(_ query: [String: String], _ body: ByteBuffer?) -> ShardKey? {
        guard let body, let campaign = try? JSONBody.decode(AdAPI.NewCampaign.self, from: body) else { return nil }
        return .key(campaign.targeting.city)
    }

    /// A rider's or driver's rides from every shard of order: one page of the newest.
    @Sendable static func mergeOrderPages(_ answers: [ByteBuffer], query: [String: String]) throws -> ByteBuffer {
        let pages = try answers.map { try JSONBody.decoder.decode(OrderAPI.OrderPage.self, from: Data($0.readableBytesView)) }
        let limit = query["limit"].flatMap { Int($0) } ?? OrderAPI.OrderPage.defaultLimit
        return ByteBuffer(bytes: try JSONBody.encoder.encode(OrderAPI.OrderPage.merged(pages, limit: limit)))
    }

    /// Every shard's answer, of one type, merged by `merge` (which needs no query).
    static func merged<Answer: Codable & Sendable>(
        _ merge: @escaping @Sendable ([Answer]) -> Answer
    ) -> @Sendable ([ByteBuffer], [String: String]) throws -> ByteBuffer {
        { answers, _ in
            let decoded = try answers.map { try JSONBody.decoder.decode(Answer.self, from: Data($0.readableBytesView)) }
            return ByteBuffer(bytes: try JSONBody.encoder.encode(merge(decoded)))
        }
    }

    /// How long an app waits for an ad before it is shown none.
    static let adDeadline: Duration = .milliseconds(250)

    /// Puts `routes` on the router's `/api/v1` group (which authenticates and counts).
    static func register(
        _ routes: [ProxyRoute], on api: RouterGroup<HailRequestContext>, clients: ServiceClient, tokens: AccessTokens
    ) {
        for route in routes {
            api.on(RouterPath(route.path), method: route.method) { request, context in
                let caller = try route.admit(context)
                let id: String? =
                    switch route.id {
                    case .path: try context.parameters.require("id")
                    case .caller: caller.userID
                    case .none: nil
                    }
                var query: [String: String] = [:]
                for name in route.query { query[name] = request.uri.queryParameters.get(name) }
                guard let within = route.optionalWithin else {
                    return try await clients.relay(route, id: id, query: query, request, context, tokens: tokens)
                }
                var bounded = context
                bounded.deadline = min(context.deadline ?? .now + within, .now + within)
                do {
                    let response = try await clients.relay(route, id: id, query: query, request, bounded, tokens: tokens)
                    if response.status.code < 500 { return response }
                    context.logger.notice("optional answer replaced by 204", metadata: ["status": "\(response.status.code)"])
                } catch {
                    context.logger.notice("optional answer replaced by 204", metadata: ["error": "\(error)"])
                }
                return Response(status: .noContent)
            }
        }
    }
}
