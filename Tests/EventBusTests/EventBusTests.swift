import Contracts
import EventBus
import Foundation
import HailKitTesting
import Logging
import RedisKit
import SQLiteKit
import Synchronization
import Testing

struct RideRequested: DomainEvent, Hashable {
    static let stream = "test-rides"
    static let type = "ride.requested"
    var rideID: String
}

/// A unique stream per test: events of type RideRequested but on their own key.
struct Fixture {
    let redis = RedisClient(configuration: .init(port: TestEnvironment.redisPort))
    let store: SQLiteStore
    let logger = Logger(label: "test")

    init() async throws {
        var migrations = SQLiteMigrations()
        migrations.add("v1-rides") { db in
            try db.execute(sql: "CREATE TABLE rides (id TEXT PRIMARY KEY)")
            try db.execute(sql: "CREATE TABLE handled (ride_id TEXT NOT NULL)")
        }
        Outbox.addMigrations(to: &migrations)
        ProcessedEvents.addMigrations(to: &migrations)
        store = try await SQLiteStore.open(
            configuration: .init(path: try TestEnvironment.temporaryDirectory("bus") + "/bus.sqlite"), migrations: migrations)
    }

    func publishDirectly(_ envelope: EventEnvelope, stream: String) async throws {
        try await redis.xadd(EventEnvelope.streamKey(stream), fields: [
            ("id", envelope.id), ("type", envelope.type), ("source", "test"), ("at", "0"), ("payload", envelope.payload),
        ])
    }
}

/// Waits until `condition` holds, up to `timeout`.
func eventually(_ timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return false
}

@Suite("EventBus: outbox, consumer groups, reclaim, dead letters, idempotency", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(2)))
struct EventBusTests {
    @Test("an event whose transaction rolled back is never published; a committed one is")
    func outboxFollowsTheTransaction() async throws {
        let fixture = try await Fixture()
        struct Refused: Error {}
        let before = try await fixture.redis.xlen(EventEnvelope.streamKey(RideRequested.stream))
        await #expect(throws: Refused.self) {
            try await fixture.store.write { db in
                try db.execute(sql: "INSERT INTO rides VALUES ('rolled-back')")
                try Outbox.enqueue(RideRequested(rideID: "rolled-back"), source: "test", in: db)
                throw Refused()
            }
        }
        let committed = try await fixture.store.write { db in
            try db.execute(sql: "INSERT INTO rides VALUES ('committed')")
            return try Outbox.enqueue(RideRequested(rideID: "committed"), source: "test", in: db)
        }
        let relay = OutboxRelay(store: fixture.store, redis: fixture.redis, logger: fixture.logger)
        #expect(try await relay.relayOnce() == 1)
        #expect(try await relay.relayOnce() == 0)

        let entries = try await fixture.redis.xrange(EventEnvelope.streamKey(RideRequested.stream), count: nil)
        let ours = entries.filter { $0.string("source") == "test" }.compactMap { $0.string("id") }
        #expect(ours.contains(committed.id))
        let payloads = entries.compactMap { $0.fields["payload"] }.map { String(decoding: $0, as: UTF8.self) }
        #expect(!payloads.contains { $0.contains("rolled-back") })
        #expect(try await fixture.redis.xlen(EventEnvelope.streamKey(RideRequested.stream)) == before + 1)
    }

    @Test("a running relay publishes a committed event as soon as the writer says so, not at its next poll")
    func relayWakesOnNotify() async throws {
        let fixture = try await Fixture()
        let wakeups = OutboxWakeups()
        // A poll a minute apart: only the wake-up can publish within the test's wait.
        let relay = OutboxRelay(
            store: fixture.store, redis: fixture.redis, wakeups: wakeups, pollInterval: .seconds(60), logger: fixture.logger)
        let running = Task { try await relay.run() }
        defer { running.cancel() }
        let key = EventEnvelope.streamKey(RideRequested.stream)
        for round in 1...3 {
            // Let the relay go idle first (its first pass finds the outbox empty, then it parks).
            try await Task.sleep(for: .milliseconds(300))
            let committed = try await fixture.store.write { db in
                try db.execute(sql: "INSERT INTO rides VALUES (?)", arguments: ["woken-\(round)"])
                return try Outbox.enqueue(RideRequested(rideID: "woken-\(round)"), source: "test", in: db)
            }
            wakeups.notify()
            let published = try await eventually(.seconds(10)) {
                try await fixture.redis.xrange(key, count: nil).contains { $0.string("id") == committed.id }
            }
            #expect(published, "round \(round): the relay did not publish after notify")
        }
        running.cancel()
        try await running.value
    }

    @Test("a consumer killed before acknowledging leaves the event to another consumer, which handles it")
    func reclaimAfterCrash() async throws {
        let fixture = try await Fixture()
        let stream = TestEnvironment.unique("rides")
        let envelope = try EventEnvelope(RideRequested(rideID: "r1"), source: "test")
        try await fixture.redis.xgroupCreate(EventEnvelope.streamKey(stream), group: "matching")
        try await fixture.publishDirectly(envelope, stream: stream)

        let configuration = EventConsumerConfiguration(
            block: .milliseconds(100), reclaimAfter: .milliseconds(300), reclaimInterval: .milliseconds(100))
        let receivedByA = Atomic<Bool>(false)
        let consumerA = EventConsumer(
            stream: stream, group: "matching", consumer: "a", redis: fixture.redis, configuration: configuration,
            logger: fixture.logger
        ) { _ in
            receivedByA.store(true, ordering: .relaxed)
            try await Task.sleep(for: .seconds(3600))  // dies here, never acknowledging
        }
        let a = Task { try await consumerA.run() }
        #expect(try await eventually { receivedByA.load(ordering: .relaxed) })
        a.cancel()  // the crash

        let pending = try await fixture.redis.xpending(EventEnvelope.streamKey(stream), group: "matching")
        #expect(pending.map(\.consumer) == ["a"])

        let handledByB = Mutex<[String]>([])
        let consumerB = EventConsumer(
            stream: stream, group: "matching", consumer: "b", redis: fixture.redis, configuration: configuration,
            logger: fixture.logger
        ) { event in
            let ride = try event.decode(RideRequested.self)
            handledByB.withLock { $0.append(ride.rideID) }
        }
        let b = Task { try await consumerB.run() }
        #expect(try await eventually { handledByB.withLock { $0 } == ["r1"] })
        #expect(try await eventually {
            try await fixture.redis.xpending(EventEnvelope.streamKey(stream), group: "matching").isEmpty
        })
        b.cancel()
    }

    @Test("a new group that starts at the newest skips what was published before it; one from the start sees it all")
    func groupStartingPoint() async throws {
        let fixture = try await Fixture()
        let stream = TestEnvironment.unique("rides")
        try await fixture.publishDirectly(try EventEnvelope(RideRequested(rideID: "old"), source: "test"), stream: stream)
        let seen = Mutex<[String: [String]]>([:])
        var tasks: [Task<Void, any Error>] = []
        for newest in [true, false] {
            let group = newest ? "pushes" : "books"
            let consumer = EventConsumer(
                stream: stream, group: group, consumer: "c", redis: fixture.redis,
                configuration: EventConsumerConfiguration(block: .milliseconds(100), startsAtNewest: newest),
                logger: fixture.logger
            ) { event in
                let ride = try event.decode(RideRequested.self)
                seen.withLock { $0[group, default: []].append(ride.rideID) }
            }
            tasks.append(Task { try await consumer.run() })
        }
        // Both groups exist once the from-the-start one has seen the old event.
        #expect(try await eventually { seen.withLock { $0["books"] } == ["old"] })
        #expect(try await eventually {
            (try await fixture.redis.send(RedisCommand("XINFO", "GROUPS", EventEnvelope.streamKey(stream))).array?.count ?? 0) == 2
        })
        try await fixture.publishDirectly(try EventEnvelope(RideRequested(rideID: "new"), source: "test"), stream: stream)
        #expect(try await eventually { seen.withLock { $0["pushes"] } == ["new"] })
        #expect(try await eventually { seen.withLock { $0["books"] } == ["old", "new"] })
        for task in tasks { task.cancel() }
    }

    @Test("a consumer restarted under the same name handles what it left unacknowledged, at once")
    func resumeUnderSameName() async throws {
        let fixture = try await Fixture()
        let stream = TestEnvironment.unique("rides")
        try await fixture.redis.xgroupCreate(EventEnvelope.streamKey(stream), group: "matching")
        for ride in ["r1", "r2", "r3"] {
            try await fixture.publishDirectly(try EventEnvelope(RideRequested(rideID: ride), source: "test"), stream: stream)
        }
        // The previous life of consumer "pod-0": read everything, died before acknowledging.
        let delivered = try await fixture.redis.xreadgroup(
            stream: EventEnvelope.streamKey(stream), group: "matching", consumer: "pod-0", count: 10)
        #expect(delivered.count == 3)

        // Reclaiming is an hour away, so only resuming can handle them now.
        let configuration = EventConsumerConfiguration(
            block: .milliseconds(100), reclaimAfter: .seconds(3600), reclaimInterval: .seconds(3600))
        let handled = Mutex<[String]>([])
        let consumer = EventConsumer(
            stream: stream, group: "matching", consumer: "pod-0", redis: fixture.redis, configuration: configuration,
            logger: fixture.logger
        ) { event in
            let ride = try event.decode(RideRequested.self)
            handled.withLock { $0.append(ride.rideID) }
        }
        let task = Task { try await consumer.run() }
        #expect(try await eventually { handled.withLock { $0.sorted() } == ["r1", "r2", "r3"] })
        #expect(try await eventually {
            try await fixture.redis.xpending(EventEnvelope.streamKey(stream), group: "matching").isEmpty
        })
        task.cancel()
    }

    @Test("the same event delivered twice is handled once")
    func idempotentHandling() async throws {
        let fixture = try await Fixture()
        let stream = TestEnvironment.unique("rides")
        let envelope = try EventEnvelope(RideRequested(rideID: "r2"), source: "test")
        // The relay crashed after XADD and published the row again: two entries, one event id.
        try await fixture.publishDirectly(envelope, stream: stream)
        try await fixture.publishDirectly(envelope, stream: stream)

        let deliveries = Atomic<Int>(0)
        let store = fixture.store
        let consumer = EventConsumer(
            stream: stream, group: "settlement", consumer: "s1", redis: fixture.redis,
            configuration: .init(block: .milliseconds(100)), logger: fixture.logger
        ) { event in
            deliveries.add(1, ordering: .relaxed)
            let ride = try event.decode(RideRequested.self)
            try await ProcessedEvents.once(event, consumer: "settlement", store: store) { db in
                try db.execute(sql: "INSERT INTO handled VALUES (?)", arguments: [ride.rideID])
            }
        }
        let task = Task { try await consumer.run() }
        #expect(try await eventually { deliveries.load(ordering: .relaxed) == 2 })
        task.cancel()
        let handled = try await store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM handled") }
        #expect(handled == 1)
    }

    @Test("an event that keeps failing goes to the dead-letter stream after N deliveries")
    func deadLetter() async throws {
        let fixture = try await Fixture()
        let stream = TestEnvironment.unique("rides")
        let envelope = try EventEnvelope(RideRequested(rideID: "poison"), source: "test")
        try await fixture.redis.xgroupCreate(EventEnvelope.streamKey(stream), group: "g")
        try await fixture.publishDirectly(envelope, stream: stream)

        let attempts = Atomic<Int>(0)
        struct Broken: Error {}
        let consumer = EventConsumer(
            stream: stream, group: "g", consumer: "c", redis: fixture.redis,
            configuration: .init(
                block: .milliseconds(50), reclaimAfter: .milliseconds(100), reclaimInterval: .milliseconds(50),
                maxDeliveries: 3),
            logger: fixture.logger
        ) { _ in
            attempts.add(1, ordering: .relaxed)
            throw Broken()
        }
        let task = Task { try await consumer.run() }
        let deadKey = EventEnvelope.deadLetterKey(stream)
        #expect(try await eventually { try await fixture.redis.xlen(deadKey) == 1 })
        task.cancel()
        #expect(attempts.load(ordering: .relaxed) == 3)
        let dead = try #require(try await fixture.redis.xrange(deadKey).first)
        #expect(dead.string("id") == envelope.id)
        #expect(dead.string("dead_reason")?.contains("3") == true)
        #expect(try await fixture.redis.xpending(EventEnvelope.streamKey(stream), group: "g").isEmpty)
    }

    @Test("a batching consumer takes a read at once; a poisoned event in it costs only itself, which goes to the dead-letter stream")
    func batching() async throws {
        let fixture = try await Fixture()
        let stream = TestEnvironment.unique("rides")
        try await fixture.redis.xgroupCreate(EventEnvelope.streamKey(stream), group: "g")
        let rides = (0..<40).map { "r\($0)" }
        let poison = try EventEnvelope(RideRequested(rideID: "poison"), source: "test")
        for ride in rides.prefix(20) {
            try await fixture.publishDirectly(try EventEnvelope(RideRequested(rideID: ride), source: "test"), stream: stream)
        }
        try await fixture.publishDirectly(poison, stream: stream)
        for ride in rides.suffix(20) {
            try await fixture.publishDirectly(try EventEnvelope(RideRequested(rideID: ride), source: "test"), stream: stream)
        }

        struct Poisoned: Error {}
        let batchSizes = Mutex<[Int]>([])
        let store = fixture.store
        let consumer = EventConsumer.batching(
            stream: stream, group: "g", consumer: "c", redis: fixture.redis,
            configuration: .init(
                batchSize: 64, block: .milliseconds(50), reclaimAfter: .milliseconds(100), reclaimInterval: .milliseconds(50),
                maxDeliveries: 2),
            logger: fixture.logger
        ) { events in
            batchSizes.withLock { $0.append(events.count) }
            try await store.write { db in
                for event in events {
                    let ride = try event.decode(RideRequested.self)
                    if ride.rideID == "poison" { throw Poisoned() }
                    if try ProcessedEvents.record(event, consumer: "g", in: db) {
                        try db.execute(sql: "INSERT INTO handled VALUES (?)", arguments: [ride.rideID])
                    }
                }
            }
        }
        let task = Task { try await consumer.run() }
        #expect(try await eventually { try await fixture.redis.xlen(EventEnvelope.deadLetterKey(stream)) == 1 })
        #expect(try await eventually {
            try await fixture.redis.xpending(EventEnvelope.streamKey(stream), group: "g").isEmpty
        })
        task.cancel()
        // The whole read went to the handler at once (and failed, for the poison), then one by one.
        #expect(batchSizes.withLock { $0.first } == 41)
        let handled = try await store.read { db in try String.fetchAll(db, sql: "SELECT ride_id FROM handled") }
        #expect(handled.sorted() == rides.sorted(), "every good event handled exactly once, the poisoned one not at all")
        let dead = try #require(try await fixture.redis.xrange(EventEnvelope.deadLetterKey(stream)).first)
        #expect(dead.string("id") == poison.id)
    }
}
