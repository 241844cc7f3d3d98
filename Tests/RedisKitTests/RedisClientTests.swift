import Foundation
import HailKitTesting
import RedisKit
import Testing

@Suite("RedisKit against a real redis-server", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"))
struct RedisClientTests {
    let client = RedisClient(configuration: .init(port: TestEnvironment.redisPort, poolSize: 2))

    @Test("10,000 pipelined commands answer in order")
    func pipelineOrder() async throws {
        let key = TestEnvironment.unique("counter")
        let replies = try await client.pipeline((0..<10_000).map { _ in RedisCommand("INCR", key) })
        #expect(replies.count == 10_000)
        #expect(replies.map(\.int) == (1...10_000).map { Optional($0) })

        // Many callers at once on the same connections: each gets its own answers.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<20 {
                group.addTask {
                    let prefix = "\(key):w\(worker)"
                    let sets = (0..<250).map { RedisCommand("SET", "\(prefix):\($0)", "value-\(worker)-\($0)") }
                    _ = try await client.pipeline(sets)
                    let gets = try await client.pipeline((0..<250).map { RedisCommand("GET", "\(prefix):\($0)") })
                    #expect(gets.map(\.string) == (0..<250).map { "value-\(worker)-\($0)" })
                }
            }
            try await group.waitForAll()
        }
    }

    @Test("a value with NUL bytes round-trips")
    func binarySafe() async throws {
        let key = TestEnvironment.unique("bin") + "\u{0}tail"
        let value: [UInt8] = [0, 1, 0, 255, 0, 10, 13, 0]
        try await client.set(key, to: value)
        #expect(try await client.get(key) == value)
        #expect(try await client.send("STRLEN", key).int == value.count)
        #expect(try await client.get(TestEnvironment.unique("missing")) == nil)
    }

    @Test("a Lua script runs by SHA, and again after SCRIPT FLUSH")
    func luaAfterFlush() async throws {
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        let key = TestEnvironment.unique("lua")
        #expect(try await client.run(script, keys: [key], arguments: [5]).int == 5)
        #expect(script.digest != nil)
        try await client.send("SCRIPT", "FLUSH")
        #expect(try await client.run(script, keys: [key], arguments: [2]).int == 7)
        // An error raised by the script is the caller's to see.
        let failing = RedisScript("return redis.error_reply('SOLD_OUT no stock left')")
        await #expect(throws: RedisError.self) { try await client.run(failing) }
    }

    @Test("stream consumer groups: XREADGROUP, XACK, XPENDING, XAUTOCLAIM")
    func streams() async throws {
        let stream = TestEnvironment.unique("stream")
        try await client.xgroupCreate(stream, group: "g")
        try await client.xgroupCreate(stream, group: "g")  // existing group: no error
        for n in 1...3 {
            try await client.xadd(stream, fields: [("n", n), ("blob", [UInt8]([0, UInt8(n)]))])
        }
        let connection = try await client.dedicatedConnection()
        let read = try await RedisClient.xreadgroup(
            on: connection, stream: stream, group: "g", consumer: "a", count: 10, block: .milliseconds(100))
        #expect(read.map { $0.string("n") } == ["1", "2", "3"])
        #expect(read[1].fields["blob"] == [0, 2])
        #expect(try await client.xack(stream, group: "g", ids: [read[0].id]) == 1)

        let pending = try await client.xpending(stream, group: "g")
        #expect(pending.map(\.id) == [read[1].id, read[2].id])
        #expect(pending.allSatisfy { $0.consumer == "a" && $0.deliveries == 1 })

        // Consumer "a" is gone; "b" takes over what it left.
        let claimed = try await client.xautoclaim(stream, group: "g", consumer: "b", minIdle: .zero)
        #expect(claimed.entries.map(\.id) == [read[1].id, read[2].id])
        let after = try await client.xpending(stream, group: "g")
        #expect(after.allSatisfy { $0.consumer == "b" && $0.deliveries == 2 })
        #expect(try await client.xack(stream, group: "g", ids: claimed.entries.map(\.id)) == 2)
        #expect(try await client.xpending(stream, group: "g").isEmpty)
        await connection.close()
    }

    @Test("pub/sub delivers what is published after subscribing")
    func pubSub() async throws {
        let channel = TestEnvironment.unique("channel")
        let subscription = try await client.subscribe(channels: [channel])
        #expect(try await client.publish(channel, "hello") == 1)
        try await client.publish(channel, [UInt8]([0, 1, 2]))
        var iterator = subscription.messages.makeAsyncIterator()
        let first = try await iterator.next()
        let second = try await iterator.next()
        #expect(first?.text == "hello")
        #expect(first?.channel == channel)
        #expect(second?.payload == [0, 1, 2])
        await subscription.close()
    }

    @Test("GEO search finds members within a radius, nearest first")
    func geo() async throws {
        let key = TestEnvironment.unique("geo")
        try await client.geoadd(key, longitude: 13.4050, latitude: 52.5200, member: "centre")
        try await client.geoadd(key, longitude: 13.4150, latitude: 52.5200, member: "near")  // ~0.68 km east
        try await client.geoadd(key, longitude: 13.7000, latitude: 52.5200, member: "far")  // ~20 km east
        let found = try await client.geosearch(key, longitude: 13.4050, latitude: 52.5200, radiusKm: 2)
        #expect(found.map(\.member) == ["centre", "near"])
        #expect(abs(found[1].distanceKm - 0.68) < 0.05)
        #expect(try await client.geopos(key, member: "far") != nil)
    }

    @Test("sendAll answers every reply, and throws the server's refusal when one command is refused")
    func sendAllRefusal() async throws {
        let key = TestEnvironment.unique("geo")
        let replies = try await client.sendAll([RedisCommand("GEOADD", key, 13.405, 52.52, "centre"), RedisCommand("ZCARD", key)])
        #expect(replies.count == 2 && replies[1].int == 1)
        // Redis's GEO sets refuse latitudes beyond ±85.05°.
        await #expect(throws: RedisError.self) {
            try await client.sendAll([RedisCommand("GEOADD", key, 0.0, 89.0, "pole"), RedisCommand("ZCARD", key)])
        }
        #expect(try await client.send(RedisCommand("ZCARD", key)).int == 1)
    }
}

@Suite("RedisKit recovers from a server restart", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"))
struct RedisRecoveryTests {
    @Test("the client works again after redis-server is killed and restarted, with nothing done by the caller")
    func recoversAfterRestart() async throws {
        let server = try RedisServerProcess()
        let client = RedisClient(configuration: .init(port: server.port, poolSize: 2, reconnectWindow: .milliseconds(300)))
        try await client.set("k", to: "before")
        #expect(try await client.getString("k") == "before")

        server.kill(SIGKILL)
        // While it is down, commands fail with a clear error instead of hanging.
        await #expect(throws: RedisError.self) { try await client.getString("k") }

        try server.start()
        // Same client object; the dead connections are replaced on use.
        try await client.set("k", to: "after")
        #expect(try await client.getString("k") == "after")
        let replies = try await client.pipeline((0..<100).map { _ in RedisCommand("INCR", "n") })
        #expect(replies.last?.int == 100)
        await client.shutdown()
    }

    @Test("a command written to a connection that has already closed fails as not sent, so it may go again on a new one (not as a bare channel error a service answers 500 to)")
    func closedConnectionNotSent() async throws {
        let server = try RedisServerProcess()
        let connection = try await RedisConnection.connect(to: .init(port: server.port))
        #expect(try await connection.send(RedisCommand("SET", "k", "1")).string == "OK")
        await connection.close()
        do {
            _ = try await connection.send(RedisCommand("INCR", "k"))
            Issue.record("a closed connection sent the command")
        } catch let error as RedisError {
            #expect(error.commandNotSent && error.isConnectionError, "\(error)")
        } catch {
            Issue.record("not a RedisError: \(error)")
        }
        let check = try await RedisConnection.connect(to: .init(port: server.port))
        #expect(try await check.send(RedisCommand("GET", "k")).string == "1", "the command did not run")
        await check.close()
        server.kill(SIGKILL)
    }
}
