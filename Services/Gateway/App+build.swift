import Configuration
import Contracts
import HailKit
import Hummingbird
import HummingbirdWebSocket
import Logging

/// Builds the gateway from configuration.
///
/// Keys beyond the kit's: `auth.jwks` (the public keys tokens are verified with), `gateway.rate.limit`
/// (requests per client per window, 300), `gateway.rate.window.seconds` (1), `gateway.rate.auth.limit`
/// (sign-up/sign-in attempts per address per window, 30), `gateway.signin.failures` (failed sign-ins per
/// client address, 20) per `gateway.signin.window.seconds` (300), `gateway.proxy.hops` (trusted proxies in
/// front that append to X-Forwarded-For, 0: the peer is the client), `gateway.ws.origins` (the web origins
/// whose pages may open `/ws`, comma-separated; empty: any page of this gateway's own host, and clients
/// that send no Origin), `gateway.relay.direct` (true: the relayed routes' common case is answered in front
/// of the router, see `RelayHandler`; false: the router answers everything), `gateway.token.attestations`
/// (true: each token passed on carries the gateway's attestation that it verified it, so the service
/// checks an HMAC, not the signature, see `TokenAttestations`; false: services verify signatures),
/// `gateway.fix.batch.ms` and `gateway.fix.batch.max` (drivers' fixes gathered into one call to matching,
/// see `FixBatches`), `ad.cities` (the ad service's cities, the same list it is given: a split ad service's
/// shard for an ad is its place's city's, see `CityCircles`), `matching.cities` (matching's cities when it is
/// split by city, as matching is given: a driver's fixes go to the instance of their city). The gateway also relays order events to the riders' and drivers' WebSockets
/// (`/ws`), from whichever instance holds the connection, and closes them when their session ends.
func buildApplication(reader: ConfigReader) async throws -> HailApplication {
    var kit = try ServiceKit(name: "gateway", reader: reader, defaultPort: 8080, defaultConnectionsPerClient: 512)
    let (router, webSockets, relay) = try await buildRouter(kit: &kit, reader: reader)
    return kit.makeApplication(router: router) { responder, http1 in
        guard let relay else {
            return HTTP1WebSocketUpgradeChannel(
                responder: responder, webSocketResponder: webSockets, configuration: .init(http1: http1, ws: .init()))
        }
        // Relayed requests are answered in front of the HTTP decoder (`RelayHandler`), which then keeps the
        // connection's idle timeout: the router does not see every request.
        var http1 = http1
        let idleTimeout = http1.idleTimeout
        http1.idleTimeout = nil
        return RelayingChannel(
            inner: HTTP1WebSocketUpgradeChannel(
                responder: responder, webSocketResponder: webSockets, configuration: .init(http1: http1, ws: .init())),
            relay: relay, idleTimeout: idleTimeout)
    }
}

/// The gateway's routes, the WebSocket router the upgrade consults, and the relay that answers the
/// relayed routes' common case in front of the router (nil with `gateway.relay.direct` false), with its
/// background services added to `kit`.
func buildRouter(
    kit: inout ServiceKit, reader: ConfigReader
) async throws -> (Router<HailRequestContext>, RouterResponder<PushSocketContext>, Relay?) {
    var tokens = try await kit.accessTokens()
    if try !reader.flag(forKey: "gateway.token.attestations", default: true) { tokens = tokens.withoutAttestations() }
    // `gateway.rate.prefix`: Redis key prefix of the rate-limit counters.
    let ratePrefix = reader.string(forKey: "gateway.rate.prefix", default: "gw:rl")
    let window = Duration.seconds(max(1, try reader.int(forKey: "gateway.rate.window.seconds", default: 1, in: 1...3600)))

    let hops = try reader.int(forKey: "gateway.proxy.hops", default: 0, in: 0...10)
    let hub = PushHub()
    // On a Redis Cluster, users' pushes are sharded pub/sub: each through its channel's master only.
    let sharded = kit.redis.isCluster ? kit.redis.shardedSubscription() : nil
    let subscriptions = PushSubscriptions(sharded: sharded)
    if let sharded { kit.addService(ShardedPushListener(subscription: sharded, hub: hub)) }
    let revocations = Revocations()
    kit.addService(PushListener(redis: kit.redis, hub: hub, subscriptions: subscriptions, revocations: revocations, logger: kit.logger))
    kit.addService(PushRelay.consumer(redis: kit.redis, instance: kit.configuration.instanceID, sharded: sharded != nil, logger: kit.logger))
    // The WebSocket checks a token's signature and the deny-list itself; the API's authentication only
    // verifies the signature, its rate limiter asks the deny-list in the same Redis round trip.
    let origins = Set(reader.list(forKey: "gateway.ws.origins").map {
        $0.trimmingCharacters(in: .whitespaces)
    }.filter { !$0.isEmpty })
    let sockets = PushSocketController(
        authentication: AuthenticationMiddleware(tokens: tokens, redis: kit.redis, revocations: revocations), hub: hub,
        subscriptions: subscriptions,
        tickets: PushTickets(redis: kit.redis, keyPrefix: ratePrefix + ":ws-ticket", lifetime: .seconds(60)), origins: origins)

    let router = kit.makeRouter()
    router.middlewares.add(ClientAddressMiddleware(hops: hops))
    // The API's own description, for anyone (clients, generators, the fuzzer).
    router.get("/api/v1/openapi.json") { _, _ -> Response in
        Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.json)))
    }
    let proxy = AuthProxyController(
        clients: kit.clients,
        revocations: revocations,
        failures: FailureThrottle(
            redis: kit.redis, keyPrefix: ratePrefix + ":failed",
            limit: try reader.int(forKey: "gateway.signin.failures", default: 20, in: 1...100_000),
            window: .seconds(try reader.int(forKey: "gateway.signin.window.seconds", default: 300, in: 1...86_400)),
            subject: "from this address"))

    // `gateway.rate.sync.ms` (50): how often the request counts kept here are carried to Redis.
    let syncInterval = Duration.milliseconds(try reader.int(forKey: "gateway.rate.sync.ms", default: 50, in: 5...1000))
    let authBudgets = RequestBudgets(
        limit: try reader.int(forKey: "gateway.rate.auth.limit", default: 30, in: 1...10_000_000), window: window,
        keyPrefix: ratePrefix + ":auth")
    // `gateway.rate.sync.after` (a sixteenth of the limit): API requests of a client counted here in a
    // window before they are carried to Redis; sign-in budgets are always carried from the first.
    let apiLimit = try reader.int(forKey: "gateway.rate.limit", default: 300, in: 1...10_000_000)
    let apiBudgets = RequestBudgets(
        limit: apiLimit, window: window, keyPrefix: ratePrefix + ":api",
        syncAfter: try reader.int(forKey: "gateway.rate.sync.after", default: max(1, apiLimit / 16), in: 1...apiLimit))
    kit.addService(authBudgets.periodicSync(redis: kit.redis, every: syncInterval, logger: kit.logger))
    kit.addService(apiBudgets.periodicSync(redis: kit.redis, every: syncInterval, logger: kit.logger))

    let publicAuth = router.group("/api/v1/auth")
        .add(middleware: RateLimitMiddleware(redis: kit.redis, budgets: authBudgets))
    proxy.registerPublic(on: publicAuth)

    let adCities: CityCircles
    do {
        adCities = try CityCircles(specification: reader.text(forKey: "ad.cities", default: CityCircles.defaultSpecification))
    } catch {
        throw ConfigurationError("ad.cities: \(error.description)")
    }
    var matchingCities: CityCircles? = nil
    let matchingCityText = reader.text(forKey: "matching.cities", default: "")
    if !matchingCityText.isEmpty {
        do {
            matchingCities = try CityCircles(specification: matchingCityText)
        } catch {
            throw ConfigurationError("matching.cities: \(error.description)")
        }
    }
    let matchingShards = kit.clients.shardCount(of: MatchingAPI.service)
    if matchingShards > 1, matchingCities?.all.count != matchingShards {
        throw ConfigurationError("matching is split into \(matchingShards) shards (shards): matching.cities must name \(matchingShards) cities, as matching is given")
    }
    let routes = ProxyRoute.all(adCities: adCities, matchingCities: matchingShards > 1 ? matchingCities : nil)
    let secured = router.group("/api/v1")
        .add(middleware: AuthenticationMiddleware(tokens: tokens, redis: kit.redis, checkDenyList: false))
        .add(middleware: RateLimitMiddleware(redis: kit.redis, budgets: apiBudgets, checksRevocation: true, revocations: revocations))
    proxy.registerSecured(on: secured)
    sockets.register(on: router, secured: secured)
    PageProxyController(clients: kit.clients).register(on: router)
    ProxyRoute.register(routes, on: secured, clients: kit.clients, tokens: tokens)
    MoneyProxyController(clients: kit.clients, tokens: tokens).register(on: secured)
    // Every other API path is authenticated first, then answered: nothing else is served yet.
    for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
        secured.on("**", method: method) { request, _ -> Response in
            throw Problem.notFound("No route for \(request.method) \(request.uri.path)")
        }
    }
    // `gateway.fix.batch.ms` (20; 0: off): how long the relay gathers drivers' fixes for one call to
    // matching, `gateway.fix.batch.max` (500) the most drivers in one.
    let fixWindow = try reader.int(forKey: "gateway.fix.batch.ms", default: 20, in: 0...1000)
    // (They go to matching on the gateway's own behalf: a gateway holding no signing key relays each.)
    var fixBatches: FixBatches? = nil
    if fixWindow > 0, let credentials = try? ServiceCredentials(tokens: tokens) {
        fixBatches = FixBatches(
            clients: kit.clients, credentials: credentials, window: .milliseconds(fixWindow),
            limit: try reader.int(forKey: "gateway.fix.batch.max", default: 500, in: 1...MatchingAPI.locationBatchLimit),
            timeout: min(kit.clients.configuration.timeout, kit.configuration.requestTimeout ?? kit.clients.configuration.timeout),
            shard: { [matchingCities, matchingShards] points in
                // Split by city: the batch of the city of each driver's latest fix.
                guard matchingShards > 1, let matchingCities else { return nil }
                return MatchingAPI.shard(ofFixes: points, in: matchingCities)
            },
            logger: kit.logger)
    }
    // `gateway.relay.direct` (true): relay the common request in front of the router.
    let relay =
        try reader.flag(forKey: "gateway.relay.direct", default: true)
        ? Relay(
            routes: routes, tokens: tokens, revocations: revocations, budgets: apiBudgets, clients: kit.clients,
            bodyLimit: kit.configuration.bodyLimit, requestTimeout: kit.configuration.requestTimeout,
            serverName: "hailstorm-gateway", fixBatches: fixBatches, logger: kit.logger)
        : nil
    return (router, sockets.webSocketRouter().buildResponder(), relay)
}
