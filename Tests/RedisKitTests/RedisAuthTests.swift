import HailKitTesting
import RedisKit
import Testing

@Suite("RedisKit against a redis-server that requires a password")
struct RedisAuthTests {
    @Test("with the password every connection signs in, pub/sub included; without it commands are refused")
    func password() async throws {
        let server = try RedisServerProcess(arguments: ["--requirepass", "s3cret-pass"])
        defer { server.kill() }
        let signedIn = RedisClient(configuration: .init(port: server.port, poolSize: 2, password: "s3cret-pass"))
        try await signedIn.send("SET", "k", "v")
        #expect(try await signedIn.send("GET", "k").string == "v")
        let subscription = try await signedIn.subscribe(channels: ["c"], patterns: [])
        await subscription.close()
        await signedIn.shutdown()

        let anonymous = RedisClient(configuration: .init(port: server.port, poolSize: 1))
        await #expect(throws: RedisError.self) { try await anonymous.send("GET", "k") }
        await anonymous.shutdown()
        let wrong = RedisClient(configuration: .init(port: server.port, poolSize: 1, password: "guess"))
        await #expect(throws: RedisError.self) { try await wrong.send("GET", "k") }
        await wrong.shutdown()
    }
}
