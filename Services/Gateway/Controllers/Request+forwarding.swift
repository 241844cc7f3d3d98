import Contracts
import HailKit
import HTTPTypes
import Hummingbird

extension Request {
    /// What the gateway passes on to a service: the caller's token (the service verifies it again and
    /// checks the caller's part in what it owns) and the Idempotency-Key.
    var forwardedHeaders: HTTPFields {
        var headers: HTTPFields = [:]
        if let authorization = self.headers[.authorization] { headers[.authorization] = authorization }
        if let key = self.headers[HailHeaders.idempotencyKey] { headers[HailHeaders.idempotencyKey] = key }
        return headers
    }
}

extension ServiceClient {
    /// Calls `endpoint` for the request being answered: its body checked against the endpoint's request
    /// type (a 400 problem at the edge otherwise) and sent on as received, its token and Idempotency-Key
    /// passed on, and the service's answer returned byte for byte — a success with its JSON, a refusal
    /// with its problem document (and `Retry-After`). The gateway does not decode and re-encode what it
    /// only relays: that was a fifth of its work per request. An answer that is neither (a proxy's HTML
    /// error page, say) becomes a 502 problem.
    func forward<Req, Res>(
        _ endpoint: Endpoint<Req, Res>, _ request: Request, _ context: HailRequestContext,
        parameters: [String: String] = [:], query: [String: String] = [:]
    ) async throws -> Response {
        var headers = request.forwardedHeaders
        var body: ByteBuffer? = nil
        if Req.self != NoContent.self {
            let received = try JSONBody.requireBody(try await request.body.collect(upTo: context.maxUploadSize))
            _ = try JSONBody.decode(Req.self, from: received)
            body = received
            headers[.contentType] = "application/json"
        }
        let answer = try await send(
            service: endpoint.service, method: endpoint.method, path: endpoint.path(parameters) + Self.queryString(query),
            headers: headers, body: body, idempotent: endpoint.isIdempotent, context: context.callContext)
        let contentType = answer.headers[.contentType] ?? ""
        let isSuccess = (200..<300).contains(answer.status.code)
        guard isSuccess || contentType.hasPrefix("application/problem+json") else {
            throw Self.problem(from: answer, service: endpoint.service)
        }
        if answer.status == .noContent { return Response(status: .noContent) }
        var fields: HTTPFields = [.contentType: isSuccess ? "application/json" : "application/problem+json"]
        for name in [HTTPField.Name.retryAfter, .wwwAuthenticate, .location] {
            if let value = answer.headers[name] { fields[name] = value }
        }
        return Response(status: answer.status, headers: fields, body: .init(byteBuffer: answer.body))
    }
}
