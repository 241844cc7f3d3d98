import Contracts
import HailKit
import HTTPTypes
import Hummingbird
import NIOCore

extension Request {
    /// What the gateway passes on to `service`: the caller's token (the service checks it again and the
    /// caller's part in what it owns) with the gateway's attestation of it (`TokenAttestations`), and the
    /// Idempotency-Key.
    func forwardedHeaders(to service: String, tokens: AccessTokens) -> HTTPFields {
        var headers: HTTPFields = [:]
        if let authorization = self.headers[.authorization] {
            headers[.authorization] = authorization
            if authorization.hasPrefix("Bearer "), let attestation = tokens.attestation(for: String(authorization.dropFirst(7)), to: service) {
                headers[HailHeaders.verifiedToken] = attestation
            }
        }
        if let key = self.headers[HailHeaders.idempotencyKey] { headers[HailHeaders.idempotencyKey] = key }
        return headers
    }
}

/// What the gateway answers for a service's answer to a relayed request: a success with its JSON, a
/// refusal with its problem document (and `Retry-After`, `WWW-Authenticate`, `Location`), byte for byte.
/// The gateway does not decode and re-encode what it only relays: that was a fifth of its work per
/// request. An answer that is neither (a proxy's HTML error page, say) becomes a 502 problem.
struct RelayedAnswer {
    var status: HTTPResponse.Status
    /// Content-Type and the headers passed on.
    var headers: HTTPFields
    /// Nil for a 204.
    var body: ByteBuffer?

    static let passedOn: [HTTPField.Name] = [.retryAfter, .wwwAuthenticate, .location]

    /// Throws the problem to answer when the service's answer cannot be relayed.
    init(status code: Int, header: (HTTPField.Name) -> String?, body: ByteBuffer) throws {
        let contentType = header(.contentType) ?? ""
        let isSuccess = (200..<300).contains(code)
        guard isSuccess || contentType.hasPrefix("application/problem+json") else {
            throw ServiceClient.problem(status: code, retryAfter: header(.retryAfter), body: body)
        }
        status = HTTPResponse.Status(code: code)
        guard code != 204 else {
            headers = [:]
            self.body = nil
            return
        }
        headers = [.contentType: isSuccess ? "application/json" : "application/problem+json"]
        for name in Self.passedOn {
            if let value = header(name) { headers[name] = value }
        }
        self.body = body
    }
}

extension ServiceClient {
    /// Relays the request being answered along `route`: its body checked against the endpoint's request
    /// type (a 400 problem at the edge otherwise) and sent on as received, its token and Idempotency-Key
    /// passed on, and the service's answer relayed (`RelayedAnswer`).
    func relay(
        _ route: ProxyRoute, id: String?, query: [String: String], _ request: Request, _ context: HailRequestContext,
        tokens: AccessTokens
    ) async throws -> Response {
        var headers = request.forwardedHeaders(to: route.service, tokens: tokens)
        var body: ByteBuffer? = nil
        if let checkBody = route.checkBody {
            let received = try await request.body.collect(upTo: context.maxUploadSize)
            try checkBody(received)
            body = received
            headers[.contentType] = "application/json"
        }
        let path = route.calleePath(id) + Self.queryString(query)
        switch try route.target(
            id: id, caller: try context.requireIdentity().userID, idempotencyKey: request.headers[HailHeaders.idempotencyKey],
            query: query, body: body, clients: self)
        {
        case .every(let merge, let refusalsAllowed):
            return try await everyShard(
                route, path: path, headers: headers, body: body, query: query, context: context, merge: merge, refusalsAllowed: refusalsAllowed)
        case .shard(let shard):
            let answer = try await send(
                service: route.service, method: route.calleeMethod, path: path,
                headers: headers, body: body, idempotent: route.isIdempotent, shard: shard, context: context.callContext)
            return try Self.relayed(answer)
        }
    }

    /// The gateway's answer for a service's (`RelayedAnswer`).
    private static func relayed(_ answer: ServiceResponse) throws -> Response {
        let relayed = try RelayedAnswer(status: answer.status.code, header: { answer.headers[$0] }, body: answer.body)
        return Response(
            status: relayed.status, headers: relayed.headers, body: relayed.body.map { .init(byteBuffer: $0) } ?? .init())
    }

    /// Asks every shard of the route's service at once and answers one merged answer; the first refusal
    /// or failure of a shard, when there is one, is the answer instead (a list missing a shard's part would
    /// look whole and be wrong). With `refusalsAllowed`, the answers that succeeded are merged, and the
    /// first refusal is the answer only when none did (what one shard knows and the others do not).
    private func everyShard(
        _ route: ProxyRoute, path: String, headers: HTTPFields, body: ByteBuffer?, query: [String: String],
        context: HailRequestContext, merge: @Sendable ([ByteBuffer], [String: String]) throws -> ByteBuffer, refusalsAllowed: Bool = false
    ) async throws -> Response {
        let count = shardCount(of: route.service)
        let answers = try await withThrowingTaskGroup(of: (Int, ServiceResponse).self) { group in
            for shard in 0..<count {
                group.addTask {
                    (shard, try await self.send(
                        service: route.service, method: route.calleeMethod, path: path, headers: headers, body: body,
                        idempotent: route.isIdempotent, shard: shard, context: context.callContext))
                }
            }
            var answers = [ServiceResponse?](repeating: nil, count: count)
            for try await (shard, answer) in group { answers[shard] = answer }
            return answers.compactMap { $0 }
        }
        let succeeded = answers.filter { (200..<300).contains($0.status.code) }
        if let refused = answers.first(where: { !(200..<300).contains($0.status.code) }), !refusalsAllowed || succeeded.isEmpty {
            return try Self.relayed(refused)
        }
        let merged: ByteBuffer
        do {
            merged = try merge(succeeded.map(\.body), query)
        } catch {
            throw Problem(
                .badGateway, slug: "bad-gateway", title: "A service answered something unexpected",
                detail: "A shard of a service behind this one answered a body the gateway cannot merge")
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: merged))
    }
}
