import Contracts
import HailKit
import HTTPTypes
import Hummingbird

/// `GET /command/…`: the command centre's page, served by the command service (`/page/…`) without a token
/// (the page signs its operator in and calls the API with theirs). Only names of the page's own files
/// pass; the answer's type, caching and content-security headers are relayed with its bytes.
struct PageProxyController: Sendable {
    let clients: ServiceClient

    static let relayedHeaders: [HTTPField.Name] = [.contentType, .cacheControl, .contentSecurityPolicy, .xContentTypeOptions]

    func register(on router: Router<HailRequestContext>) {
        // Hummingbird matches `/command/` with `/command`: the page's own relative links need the slash.
        for path in ["/command", "/command/**"] {
            router.get(RouterPath(path)) { request, context -> Response in
                guard request.uri.path != "/command" else {
                    return Response(status: .movedPermanently, headers: [.location: "/command/"])
                }
                let name = String(request.uri.path.dropFirst("/command/".count))
                guard Self.isPageName(name) else {
                    throw Problem.notFound("The command centre's page has no such file (its names are up to 64 letters, digits, '.', '-', '_' and '/')")
                }
                let answer = try await clients.send(
                    service: CommandAPI.service, method: .get, path: "/page/" + name, idempotent: true, context: context.callContext)
                var headers: HTTPFields = [:]
                for header in Self.relayedHeaders { headers[header] = answer.headers[header] }
                return Response(status: answer.status, headers: headers, body: .init(byteBuffer: answer.body))
            }
        }
    }

    /// `app.js`, `lib/leaflet.css`: letters, digits, `.`, `-`, `_` and `/`, no `..`, at most 64 characters.
    static func isPageName(_ name: String) -> Bool {
        name.count <= 64 && !name.contains("..") && !name.hasPrefix("/")
            && name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "._-/".unicodeScalars.contains($0) }
    }
}
