/// The flash-sale claim as Redis Lua scripts: the coupon service runs `claim` for every claim, and its
/// benchmark hands the very same text to `redis-benchmark`, so the two are compared on equal work.
///
/// A campaign's stock may be split into buckets, each on a slot of its own (on a Redis Cluster, on
/// different masters), so one sale is not one hot key. Every rider has a home bucket, which holds their
/// count and their idempotency answers; a claim runs `claim` there, and only when the home bucket is
/// empty does it fall over to the others (`take`), one at a time, in a fixed order. The per-user limit
/// stays exact because the home bucket counts the claim (a reservation) before any other bucket gives a
/// coupon; `release` gives the reservation back when every bucket is empty, `confirm` records the grant
/// as the idempotency answer. The sale window is judged by Redis's clock, the same for every instance.
public enum FlashSaleScript {
    /// KEYS: stock, users (hash user → claims), meta (start_ms, end_ms, limit, paused, drained), the
    /// bucket's claims stream, and the idempotency key when there is one (left out, or "" on one Redis;
    /// on a cluster "" would hash to another slot). ARGV: user, claim id, event id, event type, source,
    /// time, payload, and "1" when the sale has other buckets to fall over to. Answers `{status, …}` with
    /// status granted | repeat (claim id of the first grant) | pending (claim id of a fall-over under way)
    /// | reserved (home bucket empty: counted, now take from another) | paused | sold_out | limit_reached
    /// | not_started (start_ms) | ended | unknown. A retried claim that was granted before a pause still
    /// answers its grant. `drained` is set once a fall-over found every bucket empty: stock never grows
    /// back, so from then on an empty home bucket means sold out without asking the others.
    public static let claim = """
        local idem = KEYS[5]
        if idem == '' then idem = nil end
        local meta = redis.call('HMGET', KEYS[3], 'start_ms', 'end_ms', 'limit', 'paused', 'drained')
        if not meta[1] then return {'unknown'} end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        if now < tonumber(meta[1]) then return {'not_started', meta[1]} end
        if now >= tonumber(meta[2]) then return {'ended'} end
        if idem then
            local prior = redis.call('GET', idem)
            if prior then
                if string.sub(prior, 1, 8) == 'pending:' then return {'pending', string.sub(prior, 9)} end
                return {'repeat', prior}
            end
        end
        if meta[4] == '1' then return {'paused'} end
        local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
        if held >= tonumber(meta[3]) then return {'limit_reached'} end
        local left = tonumber(redis.call('GET', KEYS[1]) or '0')
        if left <= 0 then
            if ARGV[8] ~= '1' or meta[5] == '1' then return {'sold_out'} end
            redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
            if idem then redis.call('SET', idem, 'pending:' .. ARGV[2], 'EX', 86400) end
            return {'reserved'}
        end
        redis.call('DECR', KEYS[1])
        redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
        redis.call('XADD', KEYS[4], '*', 'id', ARGV[3], 'type', ARGV[4], 'source', ARGV[5], 'at', ARGV[6], 'payload', ARGV[7])
        if idem then redis.call('SET', idem, ARGV[2], 'EX', 86400) end
        return {'granted', ARGV[2]}
        """

    /// A coupon from another bucket for a claim its home bucket reserved. KEYS: stock, meta, the bucket's
    /// claims stream, the claim's taken-marker. ARGV: claim id, event id, event type, source, time,
    /// payload. Answers granted | repeat (this claim took its coupon here before) | empty | unknown (the
    /// sale is not in this bucket: being restored). The marker makes a repeated fall-over of the same
    /// claim take one coupon, whichever attempt gets here first.
    public static let take = """
        if redis.call('EXISTS', KEYS[2]) == 0 then return {'unknown'} end
        if redis.call('EXISTS', KEYS[4]) == 1 then return {'repeat'} end
        local left = tonumber(redis.call('GET', KEYS[1]) or '0')
        if left <= 0 then return {'empty'} end
        redis.call('DECR', KEYS[1])
        redis.call('XADD', KEYS[3], '*', 'id', ARGV[2], 'type', ARGV[3], 'source', ARGV[4], 'at', ARGV[5], 'payload', ARGV[6])
        redis.call('SET', KEYS[4], ARGV[1], 'EX', 86400)
        return {'granted'}
        """

    /// A fall-over's grant becomes the idempotency answer. KEYS: idempotency key. ARGV: claim id.
    public static let confirm = """
        if redis.call('GET', KEYS[1]) == 'pending:' .. ARGV[1] then
            redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
        end
        return 1
        """

    /// Every bucket was empty: the reservation is given back, once (with an idempotency key, only while
    /// it is still this claim's pending one). KEYS: users, meta, and the idempotency key when there is one. ARGV: user, claim
    /// id, "1" to mark the home bucket drained. Answers 1 when given back, 0 when already settled.
    public static let release = """
        if KEYS[3] and KEYS[3] ~= '' then
            if redis.call('GET', KEYS[3]) ~= 'pending:' .. ARGV[2] then return 0 end
            redis.call('DEL', KEYS[3])
        end
        local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
        if held > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], -1) end
        if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'drained', '1') end
        return 1
        """
}
