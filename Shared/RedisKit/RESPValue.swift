/// A reply from Redis, as hiredis parsed it.
///
/// Bulk strings are raw bytes, so values that carry NUL or non-UTF-8 bytes survive a round trip.
public enum RESPValue: Sendable, Hashable {
    case simpleString(String)
    case error(String)
    case integer(Int)
    case bulkString([UInt8])
    case null
    case array([RESPValue])

    /// The value as text: simple and bulk strings decode as UTF-8, integers print.
    public var string: String? {
        switch self {
        case .simpleString(let s): return s
        case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    /// The raw bytes of a bulk or simple string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): return bytes
        case .simpleString(let s): return Array(s.utf8)
        default: return nil
        }
    }

    /// The value as an integer; bulk strings holding a decimal number convert too.
    public var int: Int? {
        switch self {
        case .integer(let i): return i
        case .bulkString, .simpleString: return self.string.flatMap { Int($0) }
        default: return nil
        }
    }

    public var double: Double? {
        switch self {
        case .integer(let i): return Double(i)
        case .bulkString, .simpleString: return self.string.flatMap { Double($0) }
        default: return nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

/// Something that can be sent as one argument of a Redis command.
public protocol RESPArgumentConvertible: Sendable {
    var respBytes: [UInt8] { get }
}

extension String: RESPArgumentConvertible {
    public var respBytes: [UInt8] { Array(self.utf8) }
}

extension Substring: RESPArgumentConvertible {
    public var respBytes: [UInt8] { Array(self.utf8) }
}

extension Array: RESPArgumentConvertible where Element == UInt8 {
    public var respBytes: [UInt8] { self }
}

extension Int: RESPArgumentConvertible {
    public var respBytes: [UInt8] { Array(String(self).utf8) }
}

extension Double: RESPArgumentConvertible {
    public var respBytes: [UInt8] { Array(String(self).utf8) }
}

/// One Redis command, encoded as RESP by hiredis (`redisFormatCommandArgv`, binary-safe) when it is made.
///
/// Encoding once at construction keeps that work on the caller's task rather than the connection's event
/// loop, and a command sent many times (a benchmark, a health probe) is formatted once — as
/// redis-benchmark does with its own command buffer.
public struct RedisCommand: Sendable, Hashable, CustomStringConvertible {
    /// The command's RESP bytes.
    public let encoded: [UInt8]
    /// The command name, upper-cased (`SET`).
    public let name: String

    public init(_ name: String, _ arguments: [any RESPArgumentConvertible]) {
        self.init(rawArguments: [Array(name.utf8)] + arguments.map(\.respBytes))
    }

    public init(_ name: String, _ arguments: any RESPArgumentConvertible...) {
        self.init(name, arguments)
    }

    public init(rawArguments: [[UInt8]]) {
        self.encoded = RESPCodec.encode(rawArguments)
        self.name = String(decoding: rawArguments.first ?? [], as: UTF8.self).uppercased()
    }

    public var description: String { name }
}
