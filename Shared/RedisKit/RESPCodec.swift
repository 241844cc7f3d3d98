import CHiredis
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// RESP encoding and parsing, both done by hiredis.
enum RESPCodec {
    /// The RESP encoding of a command's arguments, by hiredis's `redisFormatCommandArgv` (binary-safe).
    static func encode(_ arguments: [[UInt8]]) -> [UInt8] {
        // Pin every argument's bytes for the duration of the C call.
        withPinnedArguments(arguments) { argv, argvlen in
            var target: UnsafeMutablePointer<CChar>? = nil
            let length = redisFormatCommandArgv(&target, Int32(arguments.count), argv, argvlen)
            guard length > 0, let target else { return [] }
            defer { redisFreeCommand(target) }
            return Array(UnsafeRawBufferPointer(start: target, count: Int(length)))
        }
    }

    private static func withPinnedArguments<R>(
        _ arguments: [[UInt8]],
        _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        let count = arguments.count
        let pointers = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: count)
        let lengths = UnsafeMutablePointer<Int>.allocate(capacity: count)
        defer {
            pointers.deallocate()
            lengths.deallocate()
        }
        // One contiguous copy of all arguments: cheaper than nesting `withUnsafeBufferPointer` per argument.
        let total = arguments.reduce(0) { $0 + $1.count }
        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(total, 1))
        defer { storage.deallocate() }
        var offset = 0
        for (index, argument) in arguments.enumerated() {
            argument.withUnsafeBufferPointer { source in
                if let base = source.baseAddress, source.count > 0 {
                    (storage + offset).initialize(from: base, count: source.count)
                }
            }
            pointers[index] = UnsafeRawPointer(storage + offset).assumingMemoryBound(to: CChar.self)
            lengths[index] = argument.count
            offset += argument.count
        }
        return body(pointers, lengths)
    }

    /// Converts a hiredis reply tree into a `RESPValue`. The caller frees the top-level reply.
    static func value(of reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            if r.len == 0 || r.str == nil { return .bulkString([]) }
            return .bulkString(Array(UnsafeRawBufferPointer(start: r.str, count: Int(r.len))))
        case REDIS_REPLY_STATUS:
            return .simpleString(text(r))
        case REDIS_REPLY_ERROR:
            return .error(text(r))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(r.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var values: [RESPValue] = []
            values.reserveCapacity(Int(r.elements))
            for index in 0..<Int(r.elements) {
                if let element = r.element[index] {
                    values.append(value(of: element))
                } else {
                    values.append(.null)
                }
            }
            return .array(values)
        default:
            return .error("unknown reply type \(r.type)")
        }
    }

    private static func text(_ r: redisReply) -> String {
        guard let str = r.str, r.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: str, count: Int(r.len)), as: UTF8.self)
    }
}

/// A hiredis reply reader fed with the bytes SwiftNIO reads.
///
/// Not thread-safe: owned by one channel handler and used only on its event loop.
final class HiredisReader {
    private let reader: UnsafeMutablePointer<redisReader>

    init() {
        self.reader = redisReaderCreate()
    }

    deinit {
        redisReaderFree(reader)
    }

    func feed(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return }
            _ = redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), raw.count)
        }
    }

    /// The next complete reply, `nil` when more bytes are needed.
    func next() throws -> RESPValue? {
        var raw: UnsafeMutableRawPointer? = nil
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
            let message = withUnsafeBytes(of: reader.pointee.errstr) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            throw RedisError.protocolError(message)
        }
        guard let raw else { return nil }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return RESPCodec.value(of: reply)
    }
}
