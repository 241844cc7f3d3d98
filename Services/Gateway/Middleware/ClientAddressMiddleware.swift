import HailKit
import Hummingbird

/// Who the client is when proxies stand in front of the gateway (a Kubernetes Ingress, a load balancer).
///
/// Each trusted proxy appends the address it received the request from to `X-Forwarded-For`. With
/// `hops` proxies in front, the client is the `hops`-th address from the right: what the outermost
/// trusted proxy saw. Anything to the left of it was written by the client and proves nothing. With no
/// trusted hops (the default), or a header shorter than the hops, the connection's peer is the client.
struct ClientAddressMiddleware: RouterMiddleware {
    typealias Context = HailRequestContext
    let hops: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard hops > 0 else { return try await next(request, context) }
        var context = context
        context.clientAddress = Self.client(forwardedFor: request.headers[values: .init("X-Forwarded-For")!], hops: hops)
            ?? context.remoteAddress
        return try await next(request, context)
    }

    /// The `hops`-th address from the right of every `X-Forwarded-For` value taken together; nil when there
    /// are fewer.
    static func client(forwardedFor values: [String], hops: Int) -> String? {
        let addresses = values.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        guard hops > 0, addresses.count >= hops else { return nil }
        let address = addresses[addresses.count - hops]
        return address.isEmpty ? nil : address
    }
}
