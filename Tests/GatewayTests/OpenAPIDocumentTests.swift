import Foundation
@testable import Gateway
import HailKit
import HailKitTesting
import Hummingbird
import Testing

/// The OpenAPI document and the gateway's routes are the same list.
@Suite("the OpenAPI document", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(1)))
struct OpenAPIDocumentTests {
    @Test("every /api/v1 route of the gateway is in the document, and the document names no route the gateway lacks")
    func sameRoutes() async throws {
        var kit = try ServiceKit(name: "gateway", reader: try .testing(["discovery.prefix": "/" + TestEnvironment.unique("oa") + "/"]), defaultPort: 0)
        let (router, _, _) = try await buildRouter(kit: &kit, reader: kit.reader)
        let served = Set(router.routes.map { "\($0.method.rawValue) \($0.path.description)" }.filter {
            $0.contains(" /api/v1/") && !$0.contains("**")
        })
        #expect(served.count > 30)
        let described = OpenAPIDocument.operations
        #expect(served.subtracting(described).isEmpty, "routes missing from the document: \(served.subtracting(described).sorted())")
        #expect(described.subtracting(served).isEmpty, "documented routes the gateway lacks: \(described.subtracting(served).sorted())")
    }

    @Test("the document is served as JSON, OpenAPI 3.1, with every schema it refers to")
    func served() async throws {
        try await withPlatform { base in
            let answer = try await testRequest(.GET, base + "/api/v1/openapi.json")
            #expect(answer.status == 200)
            #expect(answer.header("Content-Type") == "application/json")
            #expect(answer.json["openapi"] as? String == "3.1.0")
            let schemas = Set((((answer.json["components"] as? [String: Any])?["schemas"]) as? [String: Any] ?? [:]).keys)
            let references = Set(answer.text.matches(of: /#\/components\/schemas\/(\w+)/).map { String($0.1) })
            #expect(references.isSubset(of: schemas), "unresolved: \(references.subtracting(schemas).sorted())")
        }
    }
}
