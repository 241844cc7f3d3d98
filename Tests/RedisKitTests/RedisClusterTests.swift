import Foundation
import HailKitTesting
@testable import RedisKit
import Synchronization
import Testing

/// RedisKit against a real Redis Cluster of six Debian redis-servers (three masters, three replicas).
@Suite(
    "RedisKit against a real Redis Cluster", .enabled(if: TestEnvironment.hasBackends, "needs the redis-server that scripts/test.sh installs"),
    .serialized, .timeLimit(.minutes(3)))
struct RedisClusterTests {
    @Test("the key → slot function agrees with Redis's own, hash tags included")
    func hashSlots() async throws {
        let cluster = try RedisClusterProcess(nodes: 3, replicas: 0)
        var keys = ["", "a", "b", "{sale:7}:stock", "{sale:7}:claims", "{}x", "x{}y", "{{a}}", "a{b}c{d}", "grüße", "\u{0}"]
        var generator = SeededGenerator(7)
        for _ in 0..<40 {
            keys.append(String((0..<Int.random(in: 1...24, using: &generator)).map { _ in
                "ab{}:xyz019".randomElement(using: &generator)!
            }))
        }
        for key in keys {
            let expected = try #require(Int(try cluster.cli(cluster.ports[0], "CLUSTER", "KEYSLOT", key)))
            #expect(HashSlot.of(key) == expected, "key \(key.debugDescription)")
        }
        #expect(HashSlot.of("{sale:7}:stock") == HashSlot.of("{sale:7}:claims"))
        // Node addresses as MOVED and configuration write them; a port out of range is no address.
        #expect(RedisNode("::1:7000") == RedisNode(host: "::1", port: 7000))
        #expect(RedisNode("127.0.0.1:99999") == nil && RedisNode("127.0.0.1:0") == nil && RedisNode(":7000") == nil)
    }

    @Test("a pipeline over three masters answers in order, as one server would: multi-key reads joined, scripts on tagged keys, a transaction in one slot, FLUSHALL everywhere")
    func pipelineOverMasters() async throws {
        let cluster = try RedisClusterProcess()
        let client = RedisClient(configuration: cluster.configuration())
        let keys = (0..<600).map { "key:\($0)" }
        let sets = try await client.pipeline(keys.map { RedisCommand("SET", $0, "value-\($0)") })
        #expect(sets.allSatisfy { $0 == .simpleString("OK") })
        let gets = try await client.pipeline(keys.map { RedisCommand("GET", $0) })
        #expect(gets.map(\.string) == keys.map { "value-\($0)" })
        let masters = try cluster.masterPorts()
        #expect(try await client.masters().map(\.port).sorted() == masters)
        for port in masters {
            #expect(Int(try cluster.cli(port, "DBSIZE")) ?? 0 > 100, "every master holds a share of the keys")
        }

        // Multi-key commands over several slots: answers joined in the caller's order.
        let mget = try await client.send(RedisCommand("MGET", ["key:1", "absent", "key:2", "key:3"]))
        #expect(mget.array?.map(\.string) == ["value-key:1", nil, "value-key:2", "value-key:3"])
        #expect(try await client.send(RedisCommand("EXISTS", Array(keys[0..<20]) + ["absent"])).int == 20)
        #expect(try await client.send(RedisCommand("DEL", Array(keys[0..<10]))).int == 10)
        #expect(try await client.get("key:5") == nil)

        // A script's keys share a tag, so they share a slot; keys of two slots are Redis's CROSSSLOT.
        let script = RedisScript("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], 2)")
        #expect(try await client.run(script, keys: ["{sale:7}:note", "{sale:7}:count"], arguments: ["x"]).int == 2)
        #expect(try await client.run(script, keys: ["{sale:7}:note", "{sale:7}:count"], arguments: ["y"]).int == 4)
        #expect(HashSlot.of("a") != HashSlot.of("b"))
        do {
            try await client.run(script, keys: ["a", "b"], arguments: ["x"])
            Issue.record("a script over two slots ran")
        } catch let error as RedisError {
            #expect(error.serverErrorPrefix == "CROSSSLOT")
        }

        // MULTI and EXEC go with the commands between them.
        let transaction = try await client.pipeline([
            RedisCommand("MULTI"), RedisCommand("INCR", "{t}:a"), RedisCommand("INCRBY", "{t}:b", 5), RedisCommand("EXEC"),
        ])
        #expect(transaction.last?.array?.map(\.int) == [1, 5])

        // A stream read blocking on a connection to its own master.
        let stream = "{orders}:events"
        try await client.xgroupCreate(stream, group: "g")
        try await client.xadd(stream, fields: [("n", 1)])
        let connection = try await client.dedicatedConnection(forKey: stream)
        let read = try await RedisClient.xreadgroup(
            on: connection, stream: stream, group: "g", consumer: "c", count: 10, block: .milliseconds(100))
        #expect(read.map { $0.string("n") } == ["1"])
        await connection.close()

        try await client.send("FLUSHALL")
        for port in masters { #expect(try cluster.cli(port, "DBSIZE") == "0") }
        #expect(client.clusterRedirections?.moved == 0)
        await client.shutdown()
    }

    @Test("a slot migrated under traffic: ASK followed while it moves, the map updated by MOVED once it has, no command failed and no increment lost")
    func slotMigration() async throws {
        let cluster = try RedisClusterProcess()
        let client = RedisClient(configuration: cluster.configuration())
        let slot = HashSlot.of("mig")
        let keys = (0..<40).map { "{mig}:\($0)" }
        _ = try await client.pipeline(keys.map { RedisCommand("SET", $0, $0) })
        let source = try #require(try cluster.master(ofSlot: slot))
        let masters = try cluster.masterPorts()
        let target = try #require(masters.first { $0 != source })
        let (sourceID, targetID) = (try cluster.nodeID(source), try cluster.nodeID(target))

        // Traffic on the slot all along: increments of one counter, reads of every key.
        let stop = SharedFlag()
        let traffic = Task { () -> (increments: Int, failures: [String]) in
            var increments = 0
            var failures: [String] = []
            var round = 0
            while !stop.isSet {
                do {
                    _ = try await client.send("INCR", "{mig}:counter")
                    increments += 1
                    let key = keys[round % keys.count]
                    let value = try await client.get(key)
                    if value != Array(key.utf8) { failures.append("\(key) read \(String(decoding: value ?? [], as: UTF8.self))") }
                } catch {
                    failures.append("\(error)")
                }
                round += 1
            }
            return (increments, failures)
        }
        try await Task.sleep(for: .milliseconds(200))

        try cluster.cli(target, "CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceID)
        try cluster.cli(source, "CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID)
        let asksBefore = client.clusterRedirections?.ask ?? 0
        // Half the keys move; the other half (and the counter) stay behind for now.
        try cluster.cli(source, ["MIGRATE", "127.0.0.1", String(target), "", "0", "5000", "KEYS"] + keys[0..<20])
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await client.get("{mig}:3") == Array("{mig}:3".utf8), "a moved key is read where ASK sends it")
        #expect(try await client.get("{mig}:30") == Array("{mig}:30".utf8), "a key not yet moved is read where it is")
        #expect((client.clusterRedirections?.ask ?? 0) > asksBefore, "ASK was followed")

        try cluster.cli(source, ["MIGRATE", "127.0.0.1", String(target), "", "0", "5000", "KEYS"] + keys[20...] + ["{mig}:counter"])
        try await Task.sleep(for: .milliseconds(200))
        for port in [target, source] + masters.filter({ $0 != target && $0 != source }) {
            try cluster.cli(port, "CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
        }
        try await Task.sleep(for: .milliseconds(300))
        stop.set()
        let (increments, failures) = try await traffic.value
        #expect(failures.isEmpty, "\(failures.prefix(5))")
        #expect(increments > 0)
        #expect(try await client.get("{mig}:counter").map { String(decoding: $0, as: UTF8.self) } == String(increments))
        #expect((client.clusterRedirections?.moved ?? 0) > 0, "MOVED was followed once the slot changed hands")
        #expect(try cluster.master(ofSlot: slot, askingPort: target) == target)

        // The map knows the new owner now: reads go straight there.
        let moved = client.clusterRedirections?.moved ?? 0
        for key in keys { #expect(try await client.get(key) == Array(key.utf8)) }
        #expect(client.clusterRedirections?.moved == moved)
        await client.shutdown()
    }

    @Test("a master killed with SIGKILL: its replica is promoted and the client carries on with it")
    func failover() async throws {
        let cluster = try RedisClusterProcess()
        let client = RedisClient(configuration: cluster.configuration(reconnectWindow: .seconds(20)))
        let keys = (0..<300).map { "fail:\($0)" }
        _ = try await client.pipeline(keys.map { RedisCommand("SET", $0, $0) })
        try cluster.waitUntilReplicated()
        let victim = try #require(try cluster.master(ofSlot: HashSlot.of(keys[0])))

        let before = try cluster.cli(victim, "INFO", "replication")
        cluster.kill(victim)
        try await Task.sleep(for: .milliseconds(200))
        // Reads of the dead master's keys wait for its replica to take over, then answer.
        let started = ContinuousClock.now
        let gets = try await client.pipeline(keys.map { RedisCommand("GET", $0) })
        let nodesAfter = (try? cluster.cli(survivorsPort(cluster, victim), "CLUSTER", "NODES")) ?? ""
        #expect(gets.map(\.string) == keys, "victim \(victim) before the kill: \(before); nodes after: \(nodesAfter)")
        #expect(ContinuousClock.now - started < .seconds(20))
        let survivors = try cluster.masterPorts()
        #expect(survivors.count == 3 && !survivors.contains(victim), "a replica was promoted: \(survivors)")
        #expect(try await client.masters().map(\.port).sorted() == survivors)
        // And writes go to the new master.
        try await client.set(keys[0], to: Array("after".utf8))
        #expect(try await client.get(keys[0]) == Array("after".utf8))
        // A subscriber connecting now finds a live node, and a message published reaches it.
        let subscription = try await client.subscribe(channels: ["after-failover"])
        // (PUBLISH counts the receivers of the node it reached; the cluster carries it to the others.)
        try await client.publish("after-failover", "still here")
        var messages = subscription.messages.makeAsyncIterator()
        #expect(try await messages.next()?.text == "still here")
        await subscription.close()
        await client.shutdown()
    }

    @Test("sharded pub/sub: channels over three masters, each message through its own master; a channel dropped stops; a master killed, its channels are subscribed again on the promoted replica")
    func shardedPubSub() async throws {
        let cluster = try RedisClusterProcess()
        let client = RedisClient(configuration: cluster.configuration(reconnectWindow: .seconds(20)))
        let channels = (0..<60).map { "push:user:u\($0)" }
        let owners = try Set(channels.map { try #require(try cluster.master(ofSlot: HashSlot.of($0))) })
        #expect(owners.count == 3, "the channels lie on every master: \(owners)")

        let subscription = client.shardedSubscription()
        try await subscription.subscribe(channels: channels, timeout: .seconds(5))
        let received = Mutex<[String: [String]]>([:])
        let reader = Task {
            for try await message in subscription.messages {
                received.withLock { $0[message.channel, default: []].append(message.text) }
            }
        }
        // SPUBLISH answers how many subscribers the channel's master has: one each, so every channel is
        // subscribed where it is served (a subscription elsewhere would not be counted).
        func publish(_ text: String, to channels: [String]) async throws -> [Int] {
            try await client.pipeline(channels.map { RedisCommand("SPUBLISH", $0, text) }).map { $0.int ?? -1 }
        }
        #expect(try await publish("one", to: channels) == Array(repeating: 1, count: channels.count))
        #expect(try await polled { received.withLock { $0 }.filter { $0.value == ["one"] }.count == channels.count })

        let dropped = Array(channels.prefix(10)), kept = Array(channels.dropFirst(10))
        await subscription.unsubscribe(channels: dropped)
        #expect(try await polled { try await publish("ignored", to: dropped).allSatisfy { $0 == 0 } })
        #expect(await subscription.channels == Set(kept))

        // A slot handed to another master (no keys in it to migrate): Redis drops its channels' subscribers
        // there, and they are subscribed again at the new owner.
        let slot = HashSlot.of(kept[1])
        let source = try #require(try cluster.master(ofSlot: slot))
        let masters = try cluster.masterPorts()
        let target = try #require(masters.first { $0 != source })
        let targetID = try cluster.nodeID(target)
        try cluster.cli(target, "CLUSTER", "SETSLOT", String(slot), "IMPORTING", try cluster.nodeID(source))
        try cluster.cli(source, "CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID)
        for port in [target, source] + masters.filter({ $0 != target && $0 != source }) {
            try cluster.cli(port, "CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
        }
        #expect(try await polled { try await publish("moved", to: [kept[1]]) == [1] }, "subscribed again where the slot went")
        #expect(await subscription.placement.placed[kept[1]]?.port == target)

        let victim = try #require(try cluster.master(ofSlot: HashSlot.of(kept[0])))
        let moved = kept.filter { (try? cluster.master(ofSlot: HashSlot.of($0))) == victim }
        cluster.kill(victim)
        // Once the replica is promoted, every kept channel is subscribed again (on it, for the victim's).
        #expect(try await polled(.seconds(30)) {
            (try? await publish("probe", to: kept))?.allSatisfy { $0 == 1 } == true
        }, "the \(moved.count) channels of the killed master \(victim) are served again")
        let two = try await publish("two", to: kept)
        #expect(two == Array(repeating: 1, count: kept.count))
        if two != Array(repeating: 1, count: kept.count) {
            let placement = await subscription.placement
            print("sharded pub/sub after the failover: victim \(victim) replies \(two) masters \(try cluster.masterPorts()) links \(placement.links) repairing \(placement.repairing) placed \(placement.placed.mapValues(\.port)) map \(try await client.masters())")
        }
        #expect(try await polled { received.withLock { $0 }.filter { $0.value.last == "two" }.count == kept.count })
        #expect(received.withLock { $0 }.filter { dropped.contains($0.key) }.allSatisfy { !$0.value.contains("two") })

        await subscription.close()
        _ = try? await reader.value
        await client.shutdown()
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; whether it held.
func polled(_ timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

/// A flag one task sets and another polls.
final class SharedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

func survivorsPort(_ cluster: RedisClusterProcess, _ victim: Int) -> Int { cluster.ports.first { $0 != victim }! }
