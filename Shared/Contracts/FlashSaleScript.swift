/// The flash-sale claim as a Redis Lua script: the coupon service runs it for every claim, and its
/// benchmark hands the very same text to `redis-benchmark`, so the two are compared on equal work.
///
/// KEYS: stock, users (hash user → claims), meta (start_ms, end_ms, limit, paused), claims stream,
/// idempotency key or "". ARGV: user, claim id, event id, event type, source, time, payload. Answers
/// `{status, …}` with status granted | repeat (claim id of the first grant) | paused | sold_out |
/// limit_reached | not_started (start_ms) | ended | unknown. A retried claim that was granted before a
/// pause still answers its grant. The sale window is judged by Redis's clock, the same for
/// every instance.
public enum FlashSaleScript {
    public static let claim = """
        local meta = redis.call('HMGET', KEYS[3], 'start_ms', 'end_ms', 'limit', 'paused')
        if not meta[1] then return {'unknown'} end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        if now < tonumber(meta[1]) then return {'not_started', meta[1]} end
        if now >= tonumber(meta[2]) then return {'ended'} end
        if KEYS[5] ~= '' then
            local prior = redis.call('GET', KEYS[5])
            if prior then return {'repeat', prior} end
        end
        if meta[4] == '1' then return {'paused'} end
        local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
        if held >= tonumber(meta[3]) then return {'limit_reached'} end
        local left = tonumber(redis.call('GET', KEYS[1]) or '0')
        if left <= 0 then return {'sold_out'} end
        redis.call('DECR', KEYS[1])
        redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
        redis.call('XADD', KEYS[4], '*', 'id', ARGV[3], 'type', ARGV[4], 'source', ARGV[5], 'at', ARGV[6], 'payload', ARGV[7])
        if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[2], 'EX', 86400) end
        return {'granted', ARGV[2]}
        """
}
