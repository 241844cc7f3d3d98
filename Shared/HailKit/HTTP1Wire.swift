import HTTPTypes
import NIOCore
import W3CTraceContext

/// HTTP/1.1 as the service client writes and reads it, on bytes: a request is written once into one
/// buffer, an answer is framed (status line, header block, body by length or chunks) without turning each
/// header into strings. What a caller reads of the header block it reads on demand (`HTTP1Answer.header`).
public enum HTTP1Wire {
    /// A request to another service as it goes on the wire, in one buffer: the request line, `Host`, the
    /// header lines `headers` writes (with `header(_:_:to:)`), the request id, trace and deadline the call
    /// carries, the body's length, then the body.
    public static func request(
        method: HTTPRequest.Method, path: String, host: String, requestID: String?, trace: TraceContext?,
        deadlineMilliseconds: Int64, body: ByteBuffer?, allocator: ByteBufferAllocator = .init(),
        headers: (inout ByteBuffer) -> Void
    ) -> ByteBuffer {
        var bytes = allocator.buffer(capacity: 512 + (body?.readableBytes ?? 0))
        bytes.writeString(method.rawValue)
        bytes.writeStaticString(" ")
        bytes.writeString(path)
        bytes.writeStaticString(" HTTP/1.1\r\n")
        header("host", host, to: &bytes)
        headers(&bytes)
        if let requestID { header(HailHeaders.requestID.canonicalName, requestID, to: &bytes) }
        if let trace {
            header(HailHeaders.traceParent.canonicalName, trace.traceParentHeaderValue, to: &bytes)
            if let state = trace.traceStateHeaderValue, !state.isEmpty {
                header(HailHeaders.traceState.canonicalName, state, to: &bytes)
            }
        }
        header(HailHeaders.deadline.canonicalName, String(max(1, deadlineMilliseconds)), to: &bytes)
        header("content-length", String(body?.readableBytes ?? 0), to: &bytes)
        bytes.writeStaticString("\r\n")
        if var body { bytes.writeBuffer(&body) }
        return bytes
    }

    /// Writes one header line. Every name and value written is this process's own or was read from a
    /// request already (no CR or LF can be in it).
    public static func header(_ name: String, _ value: String, to bytes: inout ByteBuffer) {
        bytes.writeString(name)
        bytes.writeStaticString(": ")
        bytes.writeString(value)
        bytes.writeStaticString("\r\n")
    }
}

/// What another service answered over HTTP/1.1: the status, the header block as it came, and the whole
/// body.
public struct HTTP1Answer: Sendable {
    public var status: Int
    /// The header lines (`Name: value\r\n` each), as received.
    public var headerBlock: ByteBuffer
    public var body: ByteBuffer

    public init(status: Int, headerBlock: ByteBuffer, body: ByteBuffer) {
        self.status = status
        self.headerBlock = headerBlock
        self.body = body
    }

    /// The value of the first header named `name` (any case), trimmed; nil when there is none.
    public func header(_ name: String) -> String? {
        var found: String? = nil
        HTTP1AnswerParser.forEachHeader(in: headerBlock) { field, value in
            guard found == nil, HTTP1AnswerParser.equalsIgnoringCase(field, name) else { return }
            found = String(decoding: value, as: UTF8.self)
        }
        return found
    }

    /// Every header, in order (one whose name is not a valid field name is left out).
    public var fields: HTTPFields {
        var fields = HTTPFields()
        HTTP1AnswerParser.forEachHeader(in: headerBlock) { field, value in
            guard let name = HTTPField.Name(String(decoding: field, as: UTF8.self)) else { return }
            fields.append(HTTPField(name: name, value: String(decoding: value, as: UTF8.self)))
        }
        return fields
    }
}

/// Frames HTTP/1.1 answers out of the bytes of one connection, one answer at a time: the status line and
/// header block (at most `maxHeadBytes`), then a body by `Content-Length`, by chunks, or up to the close;
/// informational (1xx) answers are skipped. What is not HTTP/1.x, or does not frame, is an error.
struct HTTP1AnswerParser {
    enum Failure: Error {
        case malformed
        case tooLarge
    }

    private enum State {
        case head
        case length(Int)
        /// Reading a chunk's size line (nil) or the rest of a chunk of this many bytes (and its CRLF).
        case chunk(Int?)
        case trailers
        case untilClose
    }

    let maxHeadBytes: Int
    let maxBodyBytes: Int
    private var state = State.head
    private var status = 0
    private var headerBlock = ByteBuffer()
    private var body = ByteBuffer()
    private var keepAlive = true

    init(maxHeadBytes: Int = 64 << 10, maxBodyBytes: Int) {
        self.maxHeadBytes = maxHeadBytes
        self.maxBodyBytes = maxBodyBytes
    }

    /// Whether part of an answer has been read.
    var isMidAnswer: Bool {
        if case .head = state { return false }
        return true
    }

    /// Reads what it can of `buffer` (consuming it); an answer when one is complete, with whether the
    /// connection may carry another. `noBody`: the request was a HEAD, so the answer has no body.
    mutating func read(_ buffer: inout ByteBuffer, noBody: Bool) throws -> (HTTP1Answer, keepAlive: Bool)? {
        while true {
            switch state {
            case .head:
                guard let end = Self.firstIndex(of: Self.headEnd, in: buffer) else {
                    if buffer.readableBytes > maxHeadBytes { throw Failure.tooLarge }
                    return nil
                }
                let head = buffer.readSlice(length: end - buffer.readerIndex + 4)!
                try begin(head, noBody: noBody)
                if status < 200 {
                    state = .head
                    continue
                }
            case .length(let remaining):
                if remaining > 0 {
                    guard buffer.readableBytes > 0 else { return nil }
                    var part = buffer.readSlice(length: min(remaining, buffer.readableBytes))!
                    state = .length(remaining - part.readableBytes)
                    body.writeBuffer(&part)
                    continue
                }
                return finish()
            case .chunk(nil):
                guard let end = Self.firstIndex(of: Self.lineEnd, in: buffer) else {
                    if buffer.readableBytes > 1024 { throw Failure.malformed }
                    return nil
                }
                let line = buffer.readSlice(length: end - buffer.readerIndex + 2)!
                guard let size = Self.chunkSize(line) else { throw Failure.malformed }
                guard body.readableBytes + size <= maxBodyBytes else { throw Failure.tooLarge }
                state = size == 0 ? .trailers : .chunk(size)
            case .chunk(let size?):
                guard buffer.readableBytes >= size + 2 else { return nil }
                var part = buffer.readSlice(length: size)!
                guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { throw Failure.malformed }
                body.writeBuffer(&part)
                state = .chunk(nil)
            case .trailers:
                guard let end = Self.firstIndex(of: Self.lineEnd, in: buffer) else {
                    if buffer.readableBytes > maxHeadBytes { throw Failure.tooLarge }
                    return nil
                }
                let lineLength = end - buffer.readerIndex
                buffer.moveReaderIndex(forwardBy: lineLength + 2)
                if lineLength == 0 { return finish() }
            case .untilClose:
                guard body.readableBytes + buffer.readableBytes <= maxBodyBytes else { throw Failure.tooLarge }
                body.writeBuffer(&buffer)
                return nil
            }
        }
    }

    /// The connection closed: the answer read up to the close, when its body runs to the close.
    mutating func closed() -> HTTP1Answer? {
        guard case .untilClose = state else { return nil }
        return finish().0
    }

    private mutating func begin(_ head: ByteBuffer, noBody: Bool) throws {
        // "HTTP/1.x NNN" then the reason, to the line's end.
        let bytes = head.readableBytesView
        guard bytes.count >= 14, bytes.starts(with: "HTTP/1.".utf8) else { throw Failure.malformed }
        let minor = bytes[bytes.startIndex + 7]
        let digits = bytes[(bytes.startIndex + 9)..<(bytes.startIndex + 12)]
        guard minor == UInt8(ascii: "1") || minor == UInt8(ascii: "0"), bytes[bytes.startIndex + 8] == UInt8(ascii: " "),
            digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let lineEnd = Self.firstIndex(of: Self.lineEnd, in: head)
        else { throw Failure.malformed }
        status = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        let blockStart = lineEnd + 2
        headerBlock = head.getSlice(at: blockStart, length: head.writerIndex - blockStart - 2)!
        body = ByteBuffer()
        keepAlive = minor == UInt8(ascii: "1")
        var length: Int? = nil
        var chunked = false
        var malformed = false
        Self.forEachHeader(in: headerBlock) { name, value in
            if Self.equalsIgnoringCase(name, "content-length") {
                guard let parsed = Self.decimal(value), length == nil || length == parsed else {
                    malformed = true
                    return
                }
                length = parsed
            } else if Self.equalsIgnoringCase(name, "transfer-encoding") {
                chunked = true
                if !Self.endsWithIgnoringCase(value, "chunked") { malformed = true }
            } else if Self.equalsIgnoringCase(name, "connection") {
                if Self.containsIgnoringCase(value, "close") { keepAlive = false }
                if Self.containsIgnoringCase(value, "keep-alive") { keepAlive = true }
            }
        }
        guard !malformed, !(chunked && length != nil) else { throw Failure.malformed }
        if status < 200 { return }
        if noBody || status == 204 || status == 304 {
            state = .length(0)
        } else if chunked {
            state = .chunk(nil)
        } else if let length {
            guard length <= maxBodyBytes else { throw Failure.tooLarge }
            body.reserveCapacity(length)
            state = .length(length)
        } else {
            keepAlive = false
            state = .untilClose
        }
    }

    private mutating func finish() -> (HTTP1Answer, keepAlive: Bool) {
        let answer = HTTP1Answer(status: status, headerBlock: headerBlock, body: body)
        state = .head
        headerBlock = ByteBuffer()
        body = ByteBuffer()
        return (answer, keepAlive)
    }

    // MARK: Bytes

    static let headEnd: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A]
    static let lineEnd: [UInt8] = [0x0D, 0x0A]

    /// The index (in `buffer`'s own terms) where `pattern` first starts among its readable bytes.
    static func firstIndex(of pattern: [UInt8], in buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            guard bytes.count >= pattern.count else { return nil }
            var index = 0
            let last = bytes.count - pattern.count
            while index <= last {
                guard let found = bytes[index...last].firstIndex(of: pattern[0]) else { return nil }
                var matches = true
                for offset in 1..<pattern.count where bytes[found + offset] != pattern[offset] {
                    matches = false
                    break
                }
                if matches { return buffer.readerIndex + found }
                index = found + 1
            }
            return nil
        }
    }

    /// Calls `body` with each header line's name and value (surrounding spaces and tabs trimmed).
    static func forEachHeader(in block: ByteBuffer, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void) {
        block.withUnsafeReadableBytes { bytes in
            var start = 0
            while start < bytes.count {
                var end = start
                while end < bytes.count, bytes[end] != 0x0A { end += 1 }
                var lineEnd = end
                if lineEnd > start, bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                if let colon = bytes[start..<lineEnd].firstIndex(of: UInt8(ascii: ":")) {
                    var valueStart = colon + 1
                    var valueEnd = lineEnd
                    while valueStart < valueEnd, bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09 { valueStart += 1 }
                    while valueEnd > valueStart, bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09 { valueEnd -= 1 }
                    body(
                        UnsafeRawBufferPointer(rebasing: bytes[start..<colon]),
                        UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd]))
                }
                start = end + 1
            }
        }
    }

    static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    /// Whether `bytes` spell `name` in any case (`name` is lowercase ASCII).
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ name: String) -> Bool {
        guard bytes.count == name.utf8.count else { return false }
        return zip(bytes, name.utf8).allSatisfy { lowercased($0) == lowercased($1) }
    }

    static func containsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ word: String) -> Bool {
        let word = Array(word.utf8)
        guard bytes.count >= word.count else { return false }
        return (0...(bytes.count - word.count)).contains { start in
            (0..<word.count).allSatisfy { lowercased(bytes[start + $0]) == word[$0] }
        }
    }

    static func endsWithIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ word: String) -> Bool {
        let word = Array(word.utf8)
        guard bytes.count >= word.count else { return false }
        let start = bytes.count - word.count
        return (0..<word.count).allSatisfy { lowercased(bytes[start + $0]) == word[$0] }
    }

    /// A non-negative decimal of at most 15 digits.
    static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 15 else { return nil }
        var value = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// A chunk-size line's size (hex digits, then optional extensions, then CRLF).
    static func chunkSize(_ line: ByteBuffer) -> Int? {
        var value = 0
        var digits = 0
        for byte in line.readableBytesView {
            let digit: Int
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = Int(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = Int(byte - UInt8(ascii: "a")) + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = Int(byte - UInt8(ascii: "A")) + 10
            default:
                return digits > 0 ? value : nil
            }
            digits += 1
            guard digits <= 12 else { return nil }
            value = value * 16 + digit
        }
        return digits > 0 ? value : nil
    }
}
