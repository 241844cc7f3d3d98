import Contracts
import EventBus
import Foundation
import HailKit
import Logging
import Metrics
import NIOCore
import RedisKit

/// Where a sale lives in Redis: its stock split over `count` buckets, each bucket's keys under a hash
/// tag of its own (`HashSlot.spreadTags`), so that on a Redis Cluster one campaign is not one hot key on
/// one master. A service started with another count finds none of the sale's keys and rebuilds the
/// sale from the stored claims.
struct SaleBuckets: Sendable {
    let tags: [String]

    var count: Int { tags.count }

    init(count: Int, keyPrefix: String) {
        tags = HashSlot.spreadTags(count, named: keyPrefix)
    }

    /// The rider's home bucket: where their count and idempotency answers are kept.
    func home(of user: String) -> Int { count == 1 ? 0 : HashSlot.of(user) % count }

    /// The buckets a claim from `home` falls over to, in the order it tries them (the same for every
    /// attempt of the same claim).
    func others(after home: Int) -> [Int] { (1..<count).map { (home + $0) % count } }

    /// Bucket `bucket`'s share of `total` coupons.
    func share(of total: Int, bucket: Int) -> Int { total / count + (bucket < total % count ? 1 : 0) }
}

/// The flash sale's decisions, made in Redis: a Lua script checks the sale window, the rider's limit
/// and the stock, takes a coupon, and appends the claim to its bucket's claims stream — all or nothing,
/// one claim at a time however many riders press at once. Redis's answer is the rider's answer; the
/// buckets' streams then carry every granted claim to SQLite (`ClaimRecorder`), so none is lost if this
/// process dies between the two, and from there to the public `coupon.claims` stream.
///
/// With the stock in several buckets (`SaleBuckets`), a claim goes to the rider's home bucket; once that
/// is empty, the home bucket counts the claim first and the other buckets are asked for a coupon one by
/// one (`FlashSaleScript`). With `replicas` set, a claim whose scripts wrote is answered once that many
/// replicas of the bucket's master have it (`RedisReplicationBarrier`): a master killed after the
/// answer, its replica promoted, still holds every coupon it gave.
struct FlashSale: Sendable {
    let redis: RedisClient
    let keyPrefix: String
    let source: String
    /// The public stream of granted claims (`coupon.claims`); each bucket's own is named after it.
    let stream: String
    let buckets: SaleBuckets
    /// The shard of the campaigns this instance owns (the service split, `shards`): its claims' ids name
    /// it, and its buckets' streams are its own (`coupon.claims-s1.{tag}`), read by no other shard.
    var shard = Shard(index: 0, of: 1)
    /// Replicas that must have a claim's writes before it is answered (0: not waited for), through one
    /// barrier per bucket (`withReplicas`); past the barrier's timeout the claim is answered anyway, and
    /// the shortfall logged and counted.
    private(set) var replicas = 0
    private(set) var barriers: [RedisReplicationBarrier] = []
    var logger = Logger(label: "hailstorm.coupon.sale")

    /// This sale answering a claim once `count` replicas of its bucket's master have it, or `timeout`
    /// passed.
    func withReplicas(_ count: Int, timeout: Duration) -> FlashSale {
        var copy = self
        copy.replicas = count
        copy.barriers = count == 0 ? [] : (0..<buckets.count).map { bucket in
            RedisReplicationBarrier(
                redis: redis, key: "\(keyPrefix):{\(buckets.tags[bucket])}:replicated", replicas: count, timeout: timeout)
        }
        return copy
    }

    /// Waits until the replicas of `bucket`'s master have what it answered so far. Its connection lost
    /// (the master died: what it had not passed on is gone with it) throws, and the claim is answered
    /// 503, to be repeated with its key.
    private func replicated(_ bucket: Int) async throws {
        guard bucket < barriers.count else { return }
        let acknowledged = try await barriers[bucket].wait()
        if acknowledged < replicas {
            Self.unreplicated.increment()
            logger.warning(
                "a claim is answered before its bucket's replicas had it",
                metadata: ["bucket": "\(bucket)", "wanted": "\(replicas)", "acknowledged": "\(acknowledged)"])
        }
    }

    enum Outcome: Sendable, Equatable {
        case granted(claimID: String, claimedAt: Double)
        case soldOut
        case limitReached
        case notStarted(startsAt: Double)
        case ended
        case paused
        case unknownCampaign
        /// A bucket the claim fell over to is being rebuilt; the claim stays counted at home.
        case restoring
    }

    private func key(_ campaign: String, _ bucket: Int, _ name: String) -> String {
        "\(keyPrefix):{\(buckets.tags[bucket])}:\(campaign):\(name)"
    }
    func stockKey(_ campaign: String, bucket: Int) -> String { key(campaign, bucket, "stock") }
    func usersKey(_ campaign: String, bucket: Int) -> String { key(campaign, bucket, "users") }
    func metaKey(_ campaign: String, bucket: Int) -> String { key(campaign, bucket, "meta") }
    func idempotencyKey(_ campaign: String, user: String, key idempotency: String) -> String {
        key(campaign, buckets.home(of: user), "idem:\(user):\(idempotency)")
    }
    func takenKey(_ campaign: String, bucket: Int, claimID: String) -> String { key(campaign, bucket, "taken:\(claimID)") }
    func restoreLockKey(_ campaign: String) -> String { key(campaign, 0, "restoring") }

    /// Bucket `bucket`'s claims stream (a stream name: `coupon.claims.{tag}`, a shard's
    /// `coupon.claims-s1.{tag}`).
    func claimsStream(bucket: Int) -> String { "\(shard.named(stream)).{\(buckets.tags[bucket])}" }
    var claimsStreams: [String] { (0..<buckets.count).map { claimsStream(bucket: $0) } }

    private func metaKeys(_ campaign: String) -> [String] { (0..<buckets.count).map { metaKey(campaign, bucket: $0) } }

    /// Opens a campaign in Redis. Only fills what is missing, so running it again (a retried create, a
    /// restart that re-opens active campaigns) never resets a sale in progress.
    func open(_ campaign: CouponAPI.Campaign) async throws {
        var commands: [RedisCommand] = []
        for bucket in 0..<buckets.count {
            commands.append(RedisCommand("SET", stockKey(campaign.id, bucket: bucket), buckets.share(of: max(campaign.stock, 0), bucket: bucket), "NX"))
            commands.append(metaCommand(campaign, bucket: bucket))
        }
        try await redis.sendAll(commands)
    }

    /// The sale's window and limit, which the claim script reads first.
    private func metaCommand(_ campaign: CouponAPI.Campaign, bucket: Int) -> RedisCommand {
        RedisCommand(
            "HSET", metaKey(campaign.id, bucket: bucket),
            "start_ms", Int(saturating: campaign.startsAt * 1000), "end_ms", Int(saturating: campaign.endsAt * 1000),
            "limit", campaign.perUserLimit, "paused", campaign.paused ? 1 : 0)
    }

    /// Carries a campaign's pause to Redis (only each bucket's meta `paused`: the stock and counts stay);
    /// false when Redis does not hold the whole sale (the next claim restores it, pause included, from
    /// SQLite).
    func setPaused(_ campaign: CouponAPI.Campaign) async throws -> Bool {
        var everywhere = true
        for bucket in 0..<buckets.count {
            let set = try await redis.run(
                Self.pauseScript, keys: [metaKey(campaign.id, bucket: bucket)], arguments: [campaign.paused ? "1" : "0"])
            everywhere = everywhere && set.int == 1
        }
        return everywhere
    }

    static let pauseScript = RedisScript("""
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        redis.call('HSET', KEYS[1], 'paused', ARGV[1])
        return 1
        """)

    /// How long an idempotency answer is kept (the script's `EX`).
    static let idempotencyWindow: Double = 86_400

    enum Restore: Sendable, Equatable {
        /// Redis has the sale (every bucket's meta key): nothing to do.
        case present
        /// Rebuilt from the stored claims.
        case restored(claimed: Int)
        /// Another request is rebuilding it right now, or claims granted before are still on their way
        /// to SQLite.
        case inProgress
    }

    /// Makes sure Redis holds `campaign`'s sale; when it does not (Redis, or a master holding one of its
    /// buckets, lost its data, or the sale was never opened), rebuilds it from the claims stored in
    /// SQLite: the stock left, each rider's count and the idempotency answers of the last day.
    ///
    /// First every bucket's meta key goes, so no bucket grants while the sale is rebuilt; then, until
    /// each bucket's stream has been stored (a bucket that kept its data may have claims on the way),
    /// the answer is `inProgress` and the next claim tries again. The meta keys, which the scripts check
    /// first, are written last; a lock keeps two rebuilds from overlapping. Claims Redis granted but the
    /// stream had not yet carried to SQLite when Redis lost its data are lost with it (Redis's
    /// `appendfsync` decides how many).
    func restoreIfMissing(_ campaign: CouponAPI.Campaign, store: CouponStore) async throws -> Restore {
        if try await redis.send(RedisCommand("EXISTS", metaKeys(campaign.id))).int == buckets.count { return .present }
        let lock = restoreLockKey(campaign.id)
        guard try await redis.send(RedisCommand("SET", lock, "1", "NX", "EX", 60)).string == "OK" else { return .inProgress }
        do {
            try await redis.send(RedisCommand("DEL", metaKeys(campaign.id)))
            for bucket in 0..<buckets.count {
                guard try await StreamBacklog.isDrained(claimsStream(bucket: bucket), group: ClaimRecorder.group, redis: redis) else {
                    _ = try? await redis.send(RedisCommand("DEL", lock))
                    return .inProgress
                }
            }
            let now = Date().timeIntervalSince1970
            let record = try await store.saleRecord(campaign: campaign.id, keysSince: now - Self.idempotencyWindow)
            var commands = [RedisCommand("DEL", (0..<buckets.count).map { usersKey(campaign.id, bucket: $0) })]
            var homes = [[(user: String, claims: Int)]](repeating: [], count: buckets.count)
            for entry in record.perUser { homes[buckets.home(of: entry.user)].append(entry) }
            for (bucket, users) in homes.enumerated() {
                var start = 0
                while start < users.count {
                    let chunk = users[start..<min(start + 1000, users.count)]
                    commands.append(RedisCommand("HSET", [usersKey(campaign.id, bucket: bucket)] + chunk.flatMap { [$0.user, String($0.claims)] }))
                    start += chunk.count
                }
            }
            let left = max(campaign.stock - record.claimed, 0)
            for bucket in 0..<buckets.count {
                commands.append(RedisCommand("SET", stockKey(campaign.id, bucket: bucket), buckets.share(of: left, bucket: bucket)))
            }
            for key in record.keys {
                let ttl = Int(Self.idempotencyWindow - (now - key.claimedAt))
                guard ttl > 0 else { continue }
                commands.append(RedisCommand("SET", idempotencyKey(campaign.id, user: key.user, key: key.key), key.claimID, "EX", ttl))
            }
            for batch in stride(from: 0, to: commands.count, by: 500) {
                try await redis.sendAll(Array(commands[batch..<min(batch + 500, commands.count)]))
            }
            try await redis.sendAll((0..<buckets.count).map { metaCommand(campaign, bucket: $0) })
            _ = try? await redis.send(RedisCommand("DEL", lock))
            return .restored(claimed: record.claimed)
        } catch {
            _ = try? await redis.send(RedisCommand("DEL", lock))
            throw error
        }
    }

    func remaining(_ campaign: String) async throws -> Int? {
        try await remaining([campaign])[0]
    }

    /// The coupons left of several campaigns (every bucket's) in one round trip; nil for a campaign Redis
    /// holds no stock of.
    func remaining(_ campaigns: [String]) async throws -> [Int?] {
        guard !campaigns.isEmpty else { return [] }
        let keys = campaigns.flatMap { campaign in (0..<buckets.count).map { stockKey(campaign, bucket: $0) } }
        let values = try await redis.send(RedisCommand("MGET", keys)).array ?? []
        return campaigns.indices.map { index in
            let counts = (0..<buckets.count).compactMap { bucket in
                let at = index * buckets.count + bucket
                return at < values.count ? values[at].int : nil
            }
            return counts.isEmpty ? nil : counts.reduce(0, +)
        }
    }

    /// Claims one coupon of `campaign` for `user`. With an idempotency key, a repeat answers the first
    /// grant again instead of counting against the limit, also when the first attempt was cut off while
    /// it fell over to other buckets.
    func claim(campaign: String, user: String, idempotencyKey: String?) async throws -> Outcome {
        let home = buckets.home(of: user)
        let idempotency = idempotencyKey.map { self.idempotencyKey(campaign, user: user, key: $0) }
        let now = Date().timeIntervalSince1970
        let claimID = shard.id(RandomID.timeOrderedUUID())
        let envelope = Self.envelope(claimID: claimID, campaign: campaign, user: user, idempotencyKey: idempotencyKey, at: now, source: source)
        let parts = try await run(
            FlashSale.claimScript,
            keys: [
                stockKey(campaign, bucket: home), usersKey(campaign, bucket: home), metaKey(campaign, bucket: home),
                EventEnvelope.streamKey(claimsStream(bucket: home)),
            ] + (idempotency.map { [$0] } ?? []),
            arguments: [
                user, claimID, envelope.id, envelope.type, envelope.source, String(envelope.occurredAt), envelope.payload,
                buckets.count > 1 ? "1" : "0",
            ])
        if ["granted", "repeat", "reserved", "pending"].contains(parts[0].string) { try await replicated(home) }
        switch parts[0].string {
        case "granted":
            return .granted(claimID: claimID, claimedAt: now)
        case "repeat":
            // The first attempt's claim; its time is on the stream, this one is close enough to show.
            return .granted(claimID: parts.count > 1 ? parts[1].string ?? claimID : claimID, claimedAt: now)
        case "reserved":
            return try await fallOver(
                campaign: campaign, user: user, home: home, idempotency: idempotency, claimID: claimID, envelope: envelope)
        case "pending":
            // An earlier attempt with this key was counted at home and cut off while it asked the other
            // buckets: this one asks them again for that claim, which takes one coupon at most.
            guard parts.count > 1, let pending = parts[1].string else { throw RedisError.unexpectedReply("flash-sale script answered \(parts)") }
            let retried = Self.envelope(claimID: pending, campaign: campaign, user: user, idempotencyKey: idempotencyKey, at: now, source: source)
            return try await fallOver(
                campaign: campaign, user: user, home: home, idempotency: idempotency, claimID: pending, envelope: retried)
        case "sold_out": return .soldOut
        case "limit_reached": return .limitReached
        case "not_started": return .notStarted(startsAt: (parts.count > 1 ? parts[1].double ?? 0 : 0) / 1000)
        case "ended": return .ended
        case "paused": return .paused
        case "unknown": return .unknownCampaign
        default: throw RedisError.unexpectedReply("flash-sale script answered \(parts)")
        }
    }

    /// The home bucket is empty and has counted the claim: a coupon from the first other bucket that has
    /// one; none left anywhere gives the count back and marks the home bucket drained.
    private func fallOver(
        campaign: String, user: String, home: Int, idempotency: String?, claimID: String, envelope: EventEnvelope
    ) async throws -> Outcome {
        for bucket in buckets.others(after: home) {
            let parts = try await run(
                FlashSale.takeScript,
                keys: [
                    stockKey(campaign, bucket: bucket), metaKey(campaign, bucket: bucket),
                    EventEnvelope.streamKey(claimsStream(bucket: bucket)), takenKey(campaign, bucket: bucket, claimID: claimID),
                ],
                arguments: [claimID, envelope.id, envelope.type, envelope.source, String(envelope.occurredAt), envelope.payload])
            switch parts[0].string {
            case "granted", "repeat":
                try await replicated(bucket)
                if let idempotency { try await redis.run(FlashSale.confirmScript, keys: [idempotency], arguments: [claimID]) }
                return .granted(claimID: claimID, claimedAt: envelope.occurredAt)
            case "empty":
                continue
            case "unknown":
                return .restoring
            default:
                throw RedisError.unexpectedReply("flash-sale take script answered \(parts)")
            }
        }
        try await redis.run(
            FlashSale.releaseScript,
            keys: [usersKey(campaign, bucket: home), metaKey(campaign, bucket: home)] + (idempotency.map { [$0] } ?? []),
            arguments: [user, claimID, "1"])
        return .soldOut
    }

    /// Runs a sale script: its reply's parts, the status first.
    private func run(_ script: RedisScript, keys: [String], arguments: [any RESPArgumentConvertible]) async throws -> [RESPValue] {
        let reply = try await redis.run(script, keys: keys, arguments: arguments)
        guard let parts = reply.array, parts.first?.string != nil else {
            throw RedisError.unexpectedReply("flash-sale script answered \(reply)")
        }
        return parts
    }

    static let unreplicated = Counter(label: "hailstorm_coupon_unreplicated_writes_total")

    static let claimScript = RedisScript(FlashSaleScript.claim)
    static let takeScript = RedisScript(FlashSaleScript.take)
    static let confirmScript = RedisScript(FlashSaleScript.confirm)
    static let releaseScript = RedisScript(FlashSaleScript.release)

    /// The `coupon.claimed` envelope of one claim attempt, built for every attempt though only a grant is
    /// appended: written straight, not encoded.
    static func envelope(
        claimID: String, campaign: String, user: String, idempotencyKey: String?, at time: Double, source: String
    ) -> EventEnvelope {
        let event = CouponEvents.Claimed(
            claimID: claimID, campaignID: campaign, userID: user, claimedAt: time, idempotencyKey: idempotencyKey)
        return EventEnvelope(
            id: RandomID.timeOrderedUUID(), type: CouponEvents.Claimed.type, stream: CouponEvents.Claimed.stream, source: source,
            occurredAt: time, payload: payload(of: event))
    }

    /// `event` as JSON, the keys sorted as `EventEnvelope` encodes them: what `JSONEncoder` writes, at a
    /// fraction of its cost (the encoder was a twentieth of the service's work per claim).
    static func payload(of event: CouponEvents.Claimed) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(160 + event.campaignID.utf8.count + event.userID.utf8.count + (event.idempotencyKey?.utf8.count ?? 0))
        buffer.writeStaticString("{\"campaignID\":")
        JSONText.appendString(event.campaignID, to: &buffer)
        buffer.writeStaticString(",\"claimID\":")
        JSONText.appendString(event.claimID, to: &buffer)
        buffer.writeStaticString(",\"claimedAt\":")
        buffer.writeString(String(event.claimedAt))
        if let key = event.idempotencyKey {
            buffer.writeStaticString(",\"idempotencyKey\":")
            JSONText.appendString(key, to: &buffer)
        }
        buffer.writeStaticString(",\"userID\":")
        JSONText.appendString(event.userID, to: &buffer)
        buffer.writeStaticString("}")
        return Array(buffer.readableBytesView)
    }
}
