import Contracts
import EventBus
import Foundation
import HailKit
import NIOCore
import RedisKit

/// The ad service's books in Redis: what each campaign has spent (in all and per local day), each
/// user's impressions of a campaign per day, and which tokens were counted. One Lua script counts an
/// impression or a click — the token seen once, the cap, the budget, the charge, the event on the
/// stream — all or nothing, so concurrent impressions can never push a campaign past its budget and a
/// token sent twice is charged once. The stream carries every counted one to SQLite (`AdRecorder`).
///
/// On a Redis Cluster (or with `ad.redis.shards` above 1) the books are split into shards by campaign,
/// each under a hash tag of its own (`HashSlot.spreadTags`) with its own stream beside it, so that the
/// script's keys share a slot and the campaigns spread over the masters; `AdRecorder` stores each
/// shard's stream and republishes it onto `stream`, which analytics follows.
struct AdLedger: Sendable {
    let redis: RedisClient
    let prefix: String
    let source: String
    /// The stream counted impressions and clicks travel on (`ad`).
    let stream: String
    /// The shards' hash tags; nil: one Redis's plain keys, counted straight onto `stream`.
    var tags: [String]? = nil
    /// The ad service's shard this instance owns (the service split by city): its count streams are its
    /// own (`ad-s1`, `ad-s1.{tag}`), read by no other shard, and republished onto `stream`.
    var owner = Shard(index: 0, of: 1)

    /// The shard holding `campaign`'s books.
    func shard(of campaign: String) -> Int {
        guard let tags, tags.count > 1 else { return 0 }
        return HashSlot.of(campaign) % tags.count
    }

    /// The streams the count script appends to: `stream` itself, or one per shard of the books
    /// (`ad.{tag}`); the service's shard's own when the service is split (`ad-s1`, `ad-s1.{tag}`).
    var countStreams: [String] {
        let base = owner.named(stream)
        return tags.map { $0.map { "\(base).{\($0)}" } } ?? [base]
    }

    /// Whether `AdRecorder` republishes what it stores onto `stream` (the books or the service are split).
    var republishes: Bool { tags != nil || owner.isSplit }

    private func scope(_ campaign: String) -> String {
        guard let tags else { return prefix }
        return "\(prefix):{\(tags[shard(of: campaign)])}"
    }

    /// How long a token's id is remembered: longer than any token lives.
    static let seenSeconds = 7 * 86_400
    /// How long a day's counters are kept after it.
    static let dayCounterSeconds = 3 * 86_400

    func campaignKey(_ campaign: String) -> String { "\(scope(campaign)):c:\(campaign)" }
    func dayKey(_ campaign: String, day: String) -> String { "\(scope(campaign)):c:\(campaign):day:\(day)" }
    func capKey(_ campaign: String, user: String, day: String) -> String { "\(scope(campaign)):cap:\(campaign):\(day):\(user)" }
    func seenKey(_ token: String, campaign: String) -> String { "\(scope(campaign)):seen:\(token)" }
    func streamKey(_ campaign: String) -> String { EventEnvelope.streamKey(countStreams[shard(of: campaign)]) }

    enum Outcome: String, Sendable {
        case counted
        case duplicate
        case capped
        case budgetExhausted = "budget-exhausted"
    }

    /// What a campaign's books say now.
    struct Books: Sendable, Equatable {
        var spent = 0
        var spentToday = 0
        var impressions = 0
        var clicks = 0
        var duplicates = 0
    }

    /// Counts one impression or click (`kind`) of `token`, charging `charge` millicents when the budgets
    /// have room for all of it (never part of it).
    func count(
        _ token: AdTokens.Claims, charge: Int, campaign: AdAPI.NewCampaign, day: String, now: Double
    ) async throws -> Outcome {
        let isClick = token.kind == .click
        let event = AdEvents.Counted(
            tokenID: token.id, campaignID: token.campaignID, userID: token.userID, placement: token.placement.rawValue,
            chargedMillicents: charge, at: now)
        let envelope = EventEnvelope(
            id: RandomID.timeOrderedUUID(), type: isClick ? AdEvents.Counted.clickType : AdEvents.Counted.type, stream: AdEvents.Counted.stream,
            source: source, occurredAt: now, payload: Self.payload(of: event))
        let reply = try await redis.run(
            Self.countScript,
            keys: [
                seenKey(token.id, campaign: token.campaignID), capKey(token.campaignID, user: token.userID, day: day),
                campaignKey(token.campaignID), dayKey(token.campaignID, day: day), streamKey(token.campaignID),
            ],
            arguments: [
                isClick ? "c" : "i", charge, campaign.totalBudgetCents * 1000, campaign.dailyBudgetCents * 1000,
                campaign.frequencyCapPerDay, Self.seenSeconds, Self.dayCounterSeconds,
                envelope.id, envelope.type, envelope.source, String(envelope.occurredAt), envelope.payload,
            ])
        guard let status = reply.array?.first?.string, let outcome = Outcome(rawValue: status) else {
            throw RedisError.unexpectedReply("ad count script answered \(reply)")
        }
        return outcome
    }

    /// `event` as JSON, the keys sorted as `EventEnvelope` encodes them: written straight, since every
    /// impression counted makes one (the encoder was a fiftieth of the service's work).
    static func payload(of event: AdEvents.Counted) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(200 + event.campaignID.utf8.count + event.userID.utf8.count)
        buffer.writeStaticString("{\"at\":")
        buffer.writeString(String(event.at))
        buffer.writeStaticString(",\"campaignID\":")
        JSONText.appendString(event.campaignID, to: &buffer)
        buffer.writeStaticString(",\"chargedMillicents\":")
        buffer.writeString(String(event.chargedMillicents))
        buffer.writeStaticString(",\"placement\":")
        JSONText.appendString(event.placement, to: &buffer)
        buffer.writeStaticString(",\"tokenID\":")
        JSONText.appendString(event.tokenID, to: &buffer)
        buffer.writeStaticString(",\"userID\":")
        JSONText.appendString(event.userID, to: &buffer)
        buffer.writeStaticString("}")
        return Array(buffer.readableBytesView)
    }

    /// The books of `campaigns` for their current local days, in one round trip.
    func books(_ campaigns: [(id: String, day: String)]) async throws -> [Books] {
        guard !campaigns.isEmpty else { return [] }
        var commands: [RedisCommand] = []
        for campaign in campaigns {
            commands.append(RedisCommand("HMGET", campaignKey(campaign.id), "spent", "impressions", "clicks", "duplicates"))
            commands.append(RedisCommand("GET", dayKey(campaign.id, day: campaign.day)))
        }
        let replies = try await redis.pipeline(commands)
        return campaigns.indices.map { i in
            let fields = replies[2 * i].array ?? []
            func field(_ n: Int) -> Int { n < fields.count ? fields[n].int ?? 0 : 0 }
            return Books(spent: field(0), spentToday: replies[2 * i + 1].int ?? 0, impressions: field(1), clicks: field(2), duplicates: field(3))
        }
    }

    /// Each campaign's impressions of `user` today: the cap's counters, in one round trip.
    func seen(by user: String, campaigns: [(id: String, day: String)]) async throws -> [Int] {
        guard !campaigns.isEmpty else { return [] }
        let reply = try await redis.send(RedisCommand("MGET", campaigns.map { capKey($0.id, user: user, day: $0.day) }))
        let values = reply.array ?? []
        return campaigns.indices.map { $0 < values.count ? values[$0].int ?? 0 : 0 }
    }

    /// KEYS: seen token, cap counter, campaign hash, day spend, stream. ARGV: kind (i|c), charge,
    /// total budget, daily budget (both millicents), cap, seen TTL, day counter TTL, event id, type,
    /// source, time, payload. Answers {outcome}.
    static let countScript = RedisScript("""
        if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[6]) then
            redis.call('HINCRBY', KEYS[3], 'duplicates', 1)
            return {'duplicate'}
        end
        if ARGV[1] == 'i' then
            local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
            if seen >= tonumber(ARGV[5]) then
                redis.call('HINCRBY', KEYS[3], 'capped', 1)
                return {'capped'}
            end
        end
        local charge = tonumber(ARGV[2])
        if charge > 0 then
            local total = tonumber(redis.call('HGET', KEYS[3], 'spent') or '0')
            local today = tonumber(redis.call('GET', KEYS[4]) or '0')
            if total + charge > tonumber(ARGV[3]) or today + charge > tonumber(ARGV[4]) then
                redis.call('HINCRBY', KEYS[3], 'refused', 1)
                return {'budget-exhausted'}
            end
            redis.call('HINCRBY', KEYS[3], 'spent', charge)
            redis.call('INCRBY', KEYS[4], charge)
            redis.call('EXPIRE', KEYS[4], ARGV[7])
        end
        if ARGV[1] == 'i' then
            redis.call('INCR', KEYS[2])
            redis.call('EXPIRE', KEYS[2], ARGV[7])
            redis.call('HINCRBY', KEYS[3], 'impressions', 1)
        else
            redis.call('HINCRBY', KEYS[3], 'clicks', 1)
        end
        redis.call('XADD', KEYS[5], '*', 'id', ARGV[8], 'type', ARGV[9], 'source', ARGV[10], 'at', ARGV[11], 'payload', ARGV[12])
        return {'counted'}
        """)
}
