import HailKit
import HTTPTypes
import NIOCore

/// A request's head as the relay reads it off the wire: what deciding and relaying need, found in one pass
/// over the bytes, nothing more turned into strings.
struct WireRequest {
    var method: HTTPRequest.Method
    var path: String
    /// The request line and header lines, with the blank line: how many bytes the head takes.
    var headLength: Int
    var bodyLength: Int
    var authorization: String?
    var idempotencyKey: String?
    var requestID: String?
    var traceParent: String?
    var traceState: String?
    /// A header only the router handles: `Expect`, `Connection`, `Upgrade`, the caller's own deadline, a
    /// second `Authorization` or `Idempotency-Key`.
    var forRouter = false
    /// An `Upgrade` header: after this request the connection may no longer be HTTP.
    var upgrade = false

    var totalLength: Int { headLength + bodyLength }

    /// How the bytes at the front of a connection's buffer read.
    enum Framing {
        /// Not all of the head has come yet.
        case incomplete
        /// A request with this head, its body `bodyLength` bytes after it.
        case request(WireRequest)
        /// Something the relay does not frame itself (a `Transfer-Encoding`, an HTTP version other than
        /// 1.1, a header longer than `maxHeadBytes`, a line that is not strict HTTP/1.1): the HTTP decoder
        /// behind the relay reads it, and everything after it, and answers it.
        case unframed
    }

    static let methods: [String: HTTPRequest.Method] = [
        "GET": .get, "POST": .post, "PUT": .put, "PATCH": .patch, "DELETE": .delete, "HEAD": .head, "OPTIONS": .options,
    ]

    /// Reads the head at the front of `buffer` (not consuming it).
    static func frame(_ buffer: ByteBuffer, maxHeadBytes: Int) -> Framing {
        buffer.withUnsafeReadableBytes { bytes -> Framing in
            // The request line: METHOD SP origin-form SP HTTP/1.1 CRLF.
            guard let lineEnd = lineEnd(in: bytes, from: 0, limit: maxHeadBytes) else {
                return bytes.count >= maxHeadBytes ? .unframed : .incomplete
            }
            guard lineEnd >= 0,
                let space = bytes[0..<lineEnd].firstIndex(of: UInt8(ascii: " ")),
                let method = methods[String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<space]), as: UTF8.self)],
                lineEnd - space > 10,
                bytes[(lineEnd - 9)..<lineEnd].elementsEqual(" HTTP/1.1".utf8),
                bytes[space + 1] == UInt8(ascii: "/")
            else { return .unframed }
            let target = UnsafeRawBufferPointer(rebasing: bytes[(space + 1)..<(lineEnd - 9)])
            guard target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return .unframed }
            var request = WireRequest(
                method: method, path: String(decoding: target, as: UTF8.self), headLength: 0, bodyLength: 0)
            var lengthSeen = false
            var start = lineEnd + 2
            while true {
                guard let end = Self.lineEnd(in: bytes, from: start, limit: maxHeadBytes) else {
                    return bytes.count >= maxHeadBytes ? .unframed : .incomplete
                }
                guard end >= 0 else { return .unframed }
                if end == start {
                    request.headLength = end + 2
                    return .request(request)
                }
                // A field line: token ":" OWS value OWS; no folding, no control characters.
                guard let colon = bytes[start..<end].firstIndex(of: UInt8(ascii: ":")), colon > start,
                    bytes[start..<colon].allSatisfy(\.isTokenCharacter)
                else { return .unframed }
                var valueStart = colon + 1
                var valueEnd = end
                while valueStart < valueEnd, bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09 { valueStart += 1 }
                while valueEnd > valueStart, bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09 { valueEnd -= 1 }
                let name = UnsafeRawBufferPointer(rebasing: bytes[start..<colon])
                let value = UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd])
                guard value.allSatisfy({ $0 >= 0x20 && $0 != 0x7F || $0 == 0x09 }) else { return .unframed }
                switch Field(name) {
                case .authorization:
                    // Two of them: which one counts is the router's call (and its refusal).
                    if request.authorization != nil { request.forRouter = true }
                    request.authorization = String(decoding: value, as: UTF8.self)
                case .idempotencyKey:
                    if request.idempotencyKey != nil { request.forRouter = true }
                    request.idempotencyKey = String(decoding: value, as: UTF8.self)
                case .requestID: request.requestID = String(decoding: value, as: UTF8.self)
                case .traceParent: request.traceParent = String(decoding: value, as: UTF8.self)
                case .traceState: request.traceState = String(decoding: value, as: UTF8.self)
                case .contentLength:
                    guard !lengthSeen, !value.isEmpty, value.count <= 15, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                        return .unframed
                    }
                    lengthSeen = true
                    request.bodyLength = value.reduce(0) { $0 * 10 + Int($1 - 0x30) }
                case .transferEncoding:
                    return .unframed
                case .upgrade:
                    request.upgrade = true
                    request.forRouter = true
                case .routerOnly:
                    request.forRouter = true
                case .other:
                    break
                }
                start = end + 2
            }
        }
    }

    /// The index of the CR of the CRLF ending the line that starts at `start`; nil when the line has not
    /// ended (within `limit`); -1 for a bare CR or LF or a control character other than HTAB, which are not
    /// strict HTTP/1.1.
    private static func lineEnd(in bytes: UnsafeRawBufferPointer, from start: Int, limit: Int) -> Int? {
        var index = start
        let end = min(bytes.count, limit)
        while index < end {
            switch bytes[index] {
            case 0x0D:
                guard index + 1 < bytes.count else { return nil }
                return bytes[index + 1] == 0x0A ? index : -1
            case 0x0A, 0x00..<0x09, 0x0B..<0x20, 0x7F:
                // (Bytes that no HTTP/1.1 line holds: a TLS hello, say, is not left waiting for a line end.)
                return -1
            default:
                index += 1
            }
        }
        return nil
    }

    /// The header fields the relay reads or defers on.
    private enum Field {
        case authorization, idempotencyKey, requestID, traceParent, traceState, contentLength, transferEncoding, upgrade
        case routerOnly
        case other

        private static let names: [(String, Field)] = [
            ("authorization", .authorization), ("idempotency-key", .idempotencyKey), ("x-request-id", .requestID),
            ("traceparent", .traceParent), ("tracestate", .traceState), ("content-length", .contentLength),
            ("transfer-encoding", .transferEncoding), ("upgrade", .upgrade), ("expect", .routerOnly),
            ("connection", .routerOnly), ("x-hailstorm-deadline-ms", .routerOnly),
        ]

        init(_ name: UnsafeRawBufferPointer) {
            for (known, field) in Self.names where known.utf8.count == name.count {
                if zip(name, known.utf8).allSatisfy({ ($0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0) == $1 }) {
                    self = field
                    return
                }
            }
            self = .other
        }
    }
}

extension UInt8 {
    /// A `tchar` of RFC 9110: what a header field's name is made of.
    var isTokenCharacter: Bool {
        switch self {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }
}
