import Contracts
import EventBus
import Foundation
import HailKitTesting
import Logging
import RedisKit
import Synchronization
import Testing

/// Streams are bounded, but never at the cost of an entry a consumer group has not read: a consumer that
/// was down while the stream grew past its bound finds every entry when it comes back.
@Suite("Stream retention", .enabled(if: TestEnvironment.hasBackends, "needs the Redis and etcd that scripts/test.sh starts"), .timeLimit(.minutes(2)))
struct StreamTrimmerTests {
    @Test("a stopped consumer's unread entries survive trimming past the bound; once read, the stream is cut to it")
    func trimOnlyWhatWasRead() async throws {
        let fixture = try await Fixture()
        let stream = TestEnvironment.unique("trim")
        let key = EventEnvelope.streamKey(stream)
        let trimmer = StreamTrimmer(
            redis: fixture.redis, streams: [stream], retention: StreamRetention(maxLength: 100, maxAge: .seconds(3600)),
            logger: fixture.logger)
        // The group exists (its consumer ran once), then the consumer is down while 1,000 entries arrive,
        // a few milliseconds apart so that they span time as real traffic does.
        try await fixture.redis.xgroupCreate(key, group: "books", startAt: "$")
        for index in 0..<1000 {
            try await fixture.publishDirectly(try EventEnvelope(RideRequested(rideID: "ride-\(index)"), source: "test"), stream: stream)
            if index % 100 == 0 { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(try await trimmer.trim(key) == 0, "nothing unread is trimmed")
        #expect(try await fixture.redis.xlen(key) == 1000)

        // The consumer comes back and reads everything, in order.
        let seen = Mutex<[String]>([])
        let consumer = EventConsumer(
            stream: stream, group: "books", consumer: "c", redis: fixture.redis,
            configuration: EventConsumerConfiguration(batchSize: 200, block: .milliseconds(100)), logger: fixture.logger
        ) { event in
            let ride = try event.decode(RideRequested.self)
            seen.withLock { $0.append(ride.rideID) }
        }
        let running = Task { try await consumer.run() }
        #expect(try await eventually { seen.withLock { $0.count } >= 1000 })
        running.cancel()
        _ = try? await running.value
        #expect(seen.withLock { $0 } == (0..<1000).map { "ride-\($0)" }, "every entry, once, in order")

        // Read and acknowledged: now the stream is cut to about its bound.
        let trimmed = try await trimmer.trim(key)
        let left = try await fixture.redis.xlen(key)
        #expect(trimmed > 0 && left <= 200, "\(trimmed) trimmed, \(left) left of 1000 with a bound of 100")

        // A group behind the others holds the stream: nothing it has not read goes.
        try await fixture.redis.xgroupCreate(key, group: "late", startAt: "0")
        for index in 1000..<1500 {
            try await fixture.publishDirectly(try EventEnvelope(RideRequested(rideID: "ride-\(index)"), source: "test"), stream: stream)
        }
        let before = try await fixture.redis.xlen(key)
        #expect(try await trimmer.trim(key) == 0, "the late group has read nothing yet")
        #expect(try await fixture.redis.xlen(key) == before)
    }

    @Test("a stream no group reads is trimmed by its bound alone; a missing stream is nothing to do")
    func unreadStream() async throws {
        let fixture = try await Fixture()
        let stream = TestEnvironment.unique("trim-alone")
        let key = EventEnvelope.streamKey(stream)
        let trimmer = StreamTrimmer(
            redis: fixture.redis, streams: [stream], retention: StreamRetention(maxLength: 50, maxAge: .seconds(3600)),
            logger: fixture.logger)
        #expect(try await trimmer.trim(key) == 0)
        for index in 0..<500 {
            try await fixture.publishDirectly(try EventEnvelope(RideRequested(rideID: "ride-\(index)"), source: "test"), stream: stream)
            if index % 50 == 0 { try await Task.sleep(for: .milliseconds(5)) }
        }
        try await trimmer.trimAll()
        #expect(try await fixture.redis.xlen(key) <= 120)
    }
}
