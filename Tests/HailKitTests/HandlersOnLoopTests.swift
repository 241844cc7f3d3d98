import Configuration
import HailKit
import HailKitTesting
import Hummingbird
import NIOPosix
import Testing

/// `http.handlers.on.loop`: where a service runs its requests' handlers, and what they await.
@Suite(
    "Requests on the connection's event loop", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"),
    .timeLimit(.minutes(1)))
struct HandlersOnLoopTests {
    /// Where the calling code runs: on one of NIO's event loops, or elsewhere (Swift's shared pool).
    static func place() -> String { MultiThreadedEventLoopGroup.currentEventLoop == nil ? "pool" : "loop" }

    @Test("on: a handler and what it awaits from Redis run on the event loop; off: on Swift's pool; the answer is the same either way")
    func placement() async throws {
        for (setting, expected) in [("true", "loop"), ("false", "pool")] {
            let kit = try ServiceKit(
                name: "placement", reader: .testing([
                    "discovery.prefix": "/" + TestEnvironment.unique("hl") + "/", "http.handlers.on.loop": setting,
                ]), defaultPort: 0)
            let router = kit.makeRouter()
            router.post("/count") { _, _ -> String in
                let before = Self.place()
                let count = try await kit.redis.send("INCR", TestEnvironment.unique("hl-count")).int ?? -1
                return "\(before) \(Self.place()) \(count)"
            }
            try await withRunningService(kit.makeApplication(router: router)) { baseURL in
                for _ in 0..<3 {
                    let answer = try await testRequest(.POST, baseURL + "/count")
                    #expect(answer.status == 200)
                    #expect(answer.text == "\(expected) \(expected) 1", "http.handlers.on.loop=\(setting)")
                }
            }
        }
    }

    @Test("a value that is not true or false stops the service with the setting's name; the default is the service's own")
    func setting() throws {
        let reader = ConfigReader.hailstorm(arguments: ["service", "--http-handlers-on-loop", "sometimes"], environment: [:])
        let refusal = #expect(throws: ConfigurationError.self) { try ServiceConfiguration(name: "coupon", reader: reader, defaultPort: 0) }
        #expect(refusal?.description == #"http.handlers.on.loop must be true or false, not "sometimes""#)
        let none = ConfigReader.hailstorm(arguments: ["service"], environment: [:])
        #expect(try ServiceConfiguration(name: "order", reader: none, defaultPort: 0).handlersOnLoop == false)
        #expect(try ServiceConfiguration(name: "coupon", reader: none, defaultPort: 0, defaultHandlersOnLoop: true).handlersOnLoop == true)
        let off = ConfigReader.hailstorm(arguments: ["service", "--http-handlers-on-loop", "false"], environment: [:])
        #expect(try ServiceConfiguration(name: "coupon", reader: off, defaultPort: 0, defaultHandlersOnLoop: true).handlersOnLoop == false)
    }
}
