import Contracts
import Foundation
import RedisKit

/// The race for offered orders, decided in Redis: one Lua script per grab checks that the offer is open,
/// that it was made to this driver and that nobody won yet, and records the winner — atomically, so
/// among any number of simultaneous grabs exactly one wins.
///
/// Keys: `<prefix>:<order>:offered` (the drivers offered it; expires with the offer) and
/// `<prefix>:<order>:winner` (the winning driver, or `!closed` once the order went to nobody).
struct GrabBoard: Sendable {
    let redis: RedisClient
    let prefix: String
    /// How long the winner is remembered after the offer.
    let memory: Duration

    enum Outcome: String, Sendable {
        case won
        case taken
        case notOffered = "not-offered"
        case offerEnded = "offer-ended"
        case orderClosed = "order-closed"
        /// Won, but refused by the order service: the driver is on another trip (never a script's answer).
        case driverBusy = "driver-busy"
    }

    // The order id is the keys' hash tag: the grab script reads both, so in a Redis Cluster they share a slot.
    func offeredKey(_ order: String) -> String { "\(prefix):{\(order)}:offered" }
    func winnerKey(_ order: String) -> String { "\(prefix):{\(order)}:winner" }

    /// Opens (or widens) an offer until `expiresAt`.
    func open(order: String, drivers: [String], expiresAt: Double) async throws {
        _ = try await redis.pipeline([
            RedisCommand("SADD", [offeredKey(order)] + drivers),
            RedisCommand("PEXPIREAT", offeredKey(order), Int(saturating: expiresAt * 1000)),
        ])
    }

    /// Opens several races in one pipeline.
    func open(_ offers: [GrabAPI.OpenOffer]) async throws {
        var commands: [RedisCommand] = []
        commands.reserveCapacity(offers.count * 2)
        for offer in offers {
            commands.append(RedisCommand("SADD", [offeredKey(offer.orderID)] + offer.driverIDs))
            commands.append(RedisCommand("PEXPIREAT", offeredKey(offer.orderID), Int(saturating: offer.expiresAt * 1000)))
        }
        _ = try await redis.pipeline(commands)
    }

    /// Takes drivers off an offer: their grabs answer `not-offered` from now on. A grab already won stays won.
    func withdraw(order: String, drivers: [String]) async throws {
        _ = try await redis.send(RedisCommand("SREM", [offeredKey(order)] + drivers))
    }

    func grab(order: String, driver: String) async throws -> Outcome {
        let reply = try await redis.run(
            Self.grabScript, keys: [offeredKey(order), winnerKey(order)],
            arguments: [driver, Int(memory.components.seconds * 1000)])
        guard let status = reply.array?.first?.string ?? reply.string, let outcome = Outcome(rawValue: status) else {
            throw RedisError.unexpectedReply("grab script answered \(reply)")
        }
        return outcome
    }

    /// The order service refused the winner's assignment because of the order: nobody can have it now.
    func close(order: String, winner: String) async throws {
        _ = try await redis.run(Self.releaseScript, keys: [winnerKey(order)], arguments: [winner, "!closed"])
    }

    /// The order service refused the winner because of the driver (already on another trip): the race
    /// opens again for the other drivers offered it.
    func reopen(order: String, winner: String) async throws {
        _ = try await redis.run(Self.releaseScript, keys: [winnerKey(order)], arguments: [winner, ""])
    }

    static let grabScript = RedisScript("""
        local winner = redis.call('GET', KEYS[2])
        if winner then
          if winner == ARGV[1] then return {'won'} end
          if winner == '!closed' then return {'order-closed'} end
          return {'taken'}
        end
        if redis.call('EXISTS', KEYS[1]) == 0 then return {'offer-ended'} end
        if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return {'not-offered'} end
        redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
        return {'won'}
        """)

    /// Replaces the winner only if it is still `ARGV[1]`: with `ARGV[2]` (keeping the expiry), or deletes
    /// it when `ARGV[2]` is empty.
    static let releaseScript = RedisScript("""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
        redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
        return 1
        """)
}
