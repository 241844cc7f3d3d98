import Contracts
import EventBus
import Foundation
import HailKit
import NIOCore
import RedisKit

/// The flash sale's decisions, made in Redis: one Lua script checks the sale window, the rider's limit
/// and the stock, takes a coupon, and appends the claim to the `coupon.claims` stream — all or nothing,
/// one claim at a time however many riders press at once. Redis's answer is the rider's answer; the
/// stream then carries every granted claim to SQLite (`ClaimRecorder`), so none is lost if this process
/// dies between the two.
struct FlashSale: Sendable {
    let redis: RedisClient
    let keyPrefix: String
    let source: String
    /// The stream the granted claims travel on (`coupon.claims`).
    let stream: String

    enum Outcome: Sendable, Equatable {
        case granted(claimID: String, claimedAt: Double)
        case soldOut
        case limitReached
        case notStarted(startsAt: Double)
        case ended
        case paused
        case unknownCampaign
    }

    func stockKey(_ campaign: String) -> String { "\(keyPrefix):\(campaign):stock" }
    func usersKey(_ campaign: String) -> String { "\(keyPrefix):\(campaign):users" }
    func metaKey(_ campaign: String) -> String { "\(keyPrefix):\(campaign):meta" }
    func idempotencyKey(_ campaign: String, user: String, key: String) -> String {
        "\(keyPrefix):\(campaign):idem:\(user):\(key)"
    }
    var streamKey: String { EventEnvelope.streamKey(stream) }

    /// Opens a campaign in Redis. Only fills what is missing, so running it again (a retried create, a
    /// restart that re-opens active campaigns) never resets a sale in progress.
    func open(_ campaign: CouponAPI.Campaign) async throws {
        _ = try await redis.pipeline([RedisCommand("SET", stockKey(campaign.id), max(campaign.stock, 0), "NX"), metaCommand(campaign)])
    }

    /// The sale's window and limit, which the claim script reads first.
    private func metaCommand(_ campaign: CouponAPI.Campaign) -> RedisCommand {
        RedisCommand(
            "HSET", metaKey(campaign.id),
            "start_ms", Int(saturating: campaign.startsAt * 1000), "end_ms", Int(saturating: campaign.endsAt * 1000),
            "limit", campaign.perUserLimit, "paused", campaign.paused ? 1 : 0)
    }

    /// Carries a campaign's pause to Redis (only its meta's `paused`: the stock and counts stay); false
    /// when Redis does not hold the sale (the next claim restores it, pause included, from SQLite).
    func setPaused(_ campaign: CouponAPI.Campaign) async throws -> Bool {
        try await redis.run(Self.pauseScript, keys: [metaKey(campaign.id)], arguments: [campaign.paused ? "1" : "0"]).int == 1
    }

    static let pauseScript = RedisScript("""
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        redis.call('HSET', KEYS[1], 'paused', ARGV[1])
        return 1
        """)

    func restoreLockKey(_ campaign: String) -> String { "\(keyPrefix):\(campaign):restoring" }

    /// How long an idempotency answer is kept (the script's `EX`).
    static let idempotencyWindow: Double = 86_400

    enum Restore: Sendable, Equatable {
        /// Redis has the sale (its meta key): nothing to do.
        case present
        /// Rebuilt from the stored claims.
        case restored(claimed: Int)
        /// Another request is rebuilding it right now.
        case inProgress
    }

    /// Makes sure Redis holds `campaign`'s sale; when it does not (Redis lost its data, or the sale was
    /// never opened), rebuilds it from the claims stored in SQLite: the stock left, each rider's count
    /// and the idempotency answers of the last day. The meta key, which the claim script checks first,
    /// is written last, so claims are refused (`unknown`) until everything else is back; a lock keeps
    /// two rebuilds from overlapping. Claims Redis granted but the stream had not yet carried to SQLite
    /// when Redis lost its data are lost with it (Redis's `appendfsync` decides how many).
    func restoreIfMissing(_ campaign: CouponAPI.Campaign, store: CouponStore) async throws -> Restore {
        if try await redis.send(RedisCommand("EXISTS", metaKey(campaign.id))).int == 1 { return .present }
        let lock = restoreLockKey(campaign.id)
        guard try await redis.send(RedisCommand("SET", lock, "1", "NX", "EX", 60)).string == "OK" else { return .inProgress }
        do {
            let now = Date().timeIntervalSince1970
            let record = try await store.saleRecord(campaign: campaign.id, keysSince: now - Self.idempotencyWindow)
            var commands = [RedisCommand("DEL", usersKey(campaign.id))]
            var start = 0
            while start < record.perUser.count {
                let chunk = record.perUser[start..<min(start + 1000, record.perUser.count)]
                commands.append(RedisCommand("HSET", [usersKey(campaign.id)] + chunk.flatMap { [$0.user, String($0.claims)] }))
                start += chunk.count
            }
            commands.append(RedisCommand("SET", stockKey(campaign.id), max(campaign.stock - record.claimed, 0)))
            for key in record.keys {
                let left = Int(Self.idempotencyWindow - (now - key.claimedAt))
                guard left > 0 else { continue }
                commands.append(RedisCommand("SET", idempotencyKey(campaign.id, user: key.user, key: key.key), key.claimID, "EX", left))
            }
            for batch in stride(from: 0, to: commands.count, by: 500) {
                try await redis.sendAll(Array(commands[batch..<min(batch + 500, commands.count)]))
            }
            try await redis.send(metaCommand(campaign))
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

    /// The counters of several campaigns in one round trip.
    func remaining(_ campaigns: [String]) async throws -> [Int?] {
        guard !campaigns.isEmpty else { return [] }
        let reply = try await redis.send(RedisCommand("MGET", campaigns.map(stockKey)))
        return (reply.array ?? []).map(\.int) + Array(repeating: nil, count: max(0, campaigns.count - (reply.array?.count ?? 0)))
    }

    /// Claims one coupon of `campaign` for `user`. With an idempotency key, a repeat answers the first
    /// grant again instead of counting against the limit.
    func claim(campaign: String, user: String, idempotencyKey: String?) async throws -> Outcome {
        let claimID = RandomID.uuid()
        let now = Date().timeIntervalSince1970
        let event = CouponEvents.Claimed(
            claimID: claimID, campaignID: campaign, userID: user, claimedAt: now, idempotencyKey: idempotencyKey)
        // Built for every attempt, though only a grant is appended: written straight, not encoded.
        let envelope = EventEnvelope(
            id: RandomID.uuid(), type: CouponEvents.Claimed.type, stream: CouponEvents.Claimed.stream, source: source,
            occurredAt: now, payload: Self.payload(of: event))
        let reply = try await redis.run(
            Self.claimScript,
            keys: [
                stockKey(campaign), usersKey(campaign), metaKey(campaign), streamKey,
                idempotencyKey.map { self.idempotencyKey(campaign, user: user, key: $0) } ?? "",
            ],
            arguments: [
                user, claimID, envelope.id, envelope.type, envelope.source, String(envelope.occurredAt),
                envelope.payload,
            ])
        guard let parts = reply.array, let status = parts.first?.string else {
            throw RedisError.unexpectedReply("flash-sale script answered \(reply)")
        }
        switch status {
        case "granted":
            return .granted(claimID: claimID, claimedAt: now)
        case "repeat":
            // The first attempt's claim; its time is on the stream, this one is close enough to show.
            return .granted(claimID: parts.count > 1 ? parts[1].string ?? claimID : claimID, claimedAt: now)
        case "sold_out": return .soldOut
        case "limit_reached": return .limitReached
        case "not_started": return .notStarted(startsAt: (parts.count > 1 ? parts[1].double ?? 0 : 0) / 1000)
        case "ended": return .ended
        case "paused": return .paused
        case "unknown": return .unknownCampaign
        default: throw RedisError.unexpectedReply("flash-sale script answered \(status)")
        }
    }

    static let claimScript = RedisScript(FlashSaleScript.claim)

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
