import Foundation
import Hummingbird

/// `hailstorm-bare-endpoint [port]`: a Hummingbird server with one route shaped like the flash-sale claim
/// (`POST /api/v1/coupons/campaigns/{id}/claim` → 201 with a claim-sized JSON body) and nothing behind it:
/// no token check, no Redis, no second hop. The HTTP reference for `hailstorm-load bare-http`: what the
/// load generator and Hummingbird reach on this machine before Hailstorm does any work.
@main
struct BareEndpoint {
    static func main() async throws {
        let port = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 8090
        let router = Router()
        router.post("/api/v1/coupons/campaigns/:id/claim") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            let body = #"{"campaignID":"\#(id)","claimID":"00000000-0000-0000-0000-000000000000","claimedAt":0,"userID":"bare"}"#
            return Response(
                status: .created, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "bare"))
        try await app.runService()
    }
}
