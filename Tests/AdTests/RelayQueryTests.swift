import Contracts
@testable import Gateway
import Testing

/// The gateway relays an ad request (a query) on bytes only when the query is one the route passes on.
@Suite("the relay's queries")
struct RelayQueryTests {
    let routes = RelayRoutes(ProxyRoute.all())

    @Test("a query of the names a route takes, in plain or percent-escaped characters, is passed on as it came")
    func passed() throws {
        let (entry, _, query) = try #require(routes.match(.get, "/api/v1/ads?placement=rider.waiting&lat=52.52&lon=-13.4%30"))
        #expect(entry.route.path == "ads")
        #expect(query == "placement=rider.waiting&lat=52.52&lon=-13.4%30")
        #expect(routes.match(.get, "/api/v1/ads")?.query == nil)
        #expect(routes.match(.get, "/api/v1/rides?limit=5")?.0.route.path == "rides")
    }

    @Test("another name, a plus, a bare or short percent, an empty pair, or a query on a route that takes none: the router's")
    func refused() {
        for target in [
            "/api/v1/ads?placement=rider.waiting&utm=x", "/api/v1/ads?placement=rider+waiting", "/api/v1/ads?lat=5%",
            "/api/v1/ads?lat=5%4", "/api/v1/ads?lat=5%G0", "/api/v1/ads?lat=1&&lon=2", "/api/v1/ads?", "/api/v1/ads?lat",
            "/api/v1/coupons/wallet?x=1", "/api/v1/ads?lat=1;lon=2",
        ] {
            #expect(routes.match(.get, target) == nil, "\(target)")
        }
    }
}
