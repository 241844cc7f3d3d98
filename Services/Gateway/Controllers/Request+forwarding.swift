import Contracts
import HailKit
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
    /// Calls `endpoint` for the request being answered: its body decoded as the endpoint's request type
    /// (a 400 problem otherwise), its token and Idempotency-Key passed on, the service's answer (or its
    /// problem) returned as is.
    func forward<Req, Res>(
        _ endpoint: Endpoint<Req, Res>, _ request: Request, _ context: HailRequestContext,
        parameters: [String: String] = [:], query: [String: String] = [:]
    ) async throws -> Response {
        let body: Req
        if Req.self == NoContent.self {
            body = NoContent() as! Req
        } else {
            body = try await JSONBody.decode(Req.self, from: request, context: context)
        }
        let answer = try await call(
            endpoint, body, parameters: parameters, query: query, headers: request.forwardedHeaders, context: context.callContext)
        return try JSONBody.response(answer, status: endpoint.successStatus)
    }
}
