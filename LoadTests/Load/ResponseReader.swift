import NIOCore

/// Reads HTTP/1.1 answers from a connection's bytes, one answer at a time, as a load generator needs
/// them: the status, the body's bytes and whether the connection can carry the next request. Headers
/// other than the three that frame the answer (`Content-Length`, `Transfer-Encoding`, `Connection`) are
/// skipped, not stored: building a header list per answer was most of the generator's own cost per
/// request, and the generator reads nothing else.
struct ResponseReader {
    enum Step: Equatable {
        /// More bytes are needed.
        case needMore
        /// A whole answer; `keepAlive` false when the server closes the connection after it.
        case answer(status: Int, body: ByteBuffer, keepAlive: Bool)
        /// Not an HTTP/1.x answer the generator can read (the reason, for its report).
        case invalid(String)
    }

    private enum Part {
        case head
        case fixed(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkEnd
        case trailers
        case untilClose
    }

    static let maxHeadBytes = 64 << 10
    let maxBodyBytes: Int
    private var part = Part.head
    private var pending: ByteBuffer?
    private var status = 0
    private var keepAlive = true
    private var body = ByteBuffer()

    init(maxBodyBytes: Int = 16 << 20) {
        self.maxBodyBytes = maxBodyBytes
    }

    /// Whether an answer has begun (some of its bytes arrived): a connection closing then loses it.
    var isReading: Bool {
        if case .head = part { return pending.map { $0.readableBytes > 0 } ?? false }
        return true
    }

    /// The answer a close completes: one whose body runs until the connection closes.
    mutating func closed() -> Step {
        guard case .untilClose = part else { return .invalid("the connection closed in the middle of an answer") }
        let answer = Step.answer(status: status, body: body, keepAlive: false)
        self = ResponseReader(maxBodyBytes: maxBodyBytes)
        return answer
    }

    /// Takes the bytes just read; gives the answer they complete, if any. Bytes after an answer are kept
    /// for the next one (a server does not send them unasked; a reader that finds some reports it).
    mutating func read(_ bytes: inout ByteBuffer) -> Step {
        if pending == nil || pending!.readableBytes == 0 {
            pending = bytes
        } else {
            pending!.writeBuffer(&bytes)
        }
        return next()
    }

    /// The next answer from the bytes already read (after an answer, the bytes that followed it).
    mutating func next() -> Step {
        while true {
            let step = advance()
            if case .needMore = step, progressed { continue }
            // Nothing unread is held: the connection's read buffer can be used again.
            if pending?.readableBytes == 0 { pending = nil }
            return step
        }
    }

    /// Bytes read beyond the last whole answer (a server sends none unasked).
    var hasLeftover: Bool { (pending?.readableBytes ?? 0) > 0 }

    /// Whether the last `advance` moved to another part (and may go on with the bytes it has).
    private var progressed = false

    private mutating func advance() -> Step {
        progressed = false
        guard var buffer = pending else { return .needMore }
        defer { pending = buffer }
        switch part {
        case .head:
            guard let end = Self.find(Self.headEnd, in: buffer) else {
                return buffer.readableBytes > Self.maxHeadBytes ? .invalid("an answer's head is over 64 KiB") : .needMore
            }
            let head = buffer.readSlice(length: end + 4)!
            if let problem = readHead(head) { return .invalid(problem) }
            progressed = true
            // An interim answer (100 Continue and the like) is followed by the real one.
            if (100..<200).contains(status) && status != 101 {
                part = .head
            }
            return .needMore
        case .fixed(let remaining):
            let take = min(remaining, buffer.readableBytes)
            var slice = buffer.readSlice(length: take)!
            if remaining == take, body.readableBytes == 0 {
                body = slice
            } else {
                body.writeBuffer(&slice)
            }
            guard remaining == take else {
                part = .fixed(remaining: remaining - take)
                return .needMore
            }
            return finish()
        case .chunkSize:
            guard let end = Self.find(Self.lineEnd, in: buffer) else {
                return buffer.readableBytes > 1024 ? .invalid("a chunk size line is over 1 KiB") : .needMore
            }
            let line = buffer.readSlice(length: end + 2)!
            var size = 0
            var digits = 0
            for byte in line.readableBytesView.prefix(end) {
                guard let value = Self.hexValue(byte) else { break }
                size = size &* 16 &+ value
                digits += 1
                guard digits <= 8 else { return .invalid("a chunk over 4 GiB") }
            }
            guard digits > 0 else { return .invalid("a chunk size that is not hexadecimal") }
            guard body.readableBytes + size <= maxBodyBytes else { return .invalid("an answer over \(maxBodyBytes) bytes") }
            part = size == 0 ? .trailers : .chunkData(remaining: size)
            progressed = true
            return .needMore
        case .chunkData(let remaining):
            let take = min(remaining, buffer.readableBytes)
            var slice = buffer.readSlice(length: take)!
            body.writeBuffer(&slice)
            part = remaining == take ? .chunkEnd : .chunkData(remaining: remaining - take)
            progressed = remaining == take
            return .needMore
        case .chunkEnd:
            guard buffer.readableBytes >= 2 else { return .needMore }
            guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { return .invalid("a chunk not ended by CRLF") }
            part = .chunkSize
            progressed = true
            return .needMore
        case .trailers:
            guard let end = Self.find(Self.lineEnd, in: buffer) else {
                return buffer.readableBytes > Self.maxHeadBytes ? .invalid("trailers over 64 KiB") : .needMore
            }
            buffer.moveReaderIndex(forwardBy: end + 2)
            // An empty line ends the trailers, and the answer.
            guard end == 0 else {
                progressed = true
                return .needMore
            }
            return finish()
        case .untilClose:
            guard body.readableBytes + buffer.readableBytes <= maxBodyBytes else {
                return .invalid("an answer over \(maxBodyBytes) bytes")
            }
            body.writeBuffer(&buffer)
            return .needMore
        }
    }

    private mutating func finish() -> Step {
        let answer = Step.answer(status: status, body: body, keepAlive: keepAlive)
        part = .head
        status = 0
        keepAlive = true
        body = ByteBuffer()
        return answer
    }

    /// Reads the status line and the framing headers; sets the part that follows. Nil, or the problem.
    private mutating func readHead(_ head: ByteBuffer) -> String? {
        let bytes = head.readableBytesView
        // "HTTP/1.1 201 Created\r\n": the version's minor digit, a space, three digits.
        guard bytes.count >= 14, bytes.starts(with: Self.versionPrefix) else { return "not an HTTP/1.x answer" }
        let start = bytes.startIndex
        let minor = bytes[start + 7]
        guard minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1"), bytes[start + 8] == UInt8(ascii: " ") else {
            return "not an HTTP/1.0 or 1.1 answer"
        }
        var code = 0
        for byte in bytes[(start + 9)..<(start + 12)] {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return "a status that is not three digits" }
            code = code * 10 + Int(byte - UInt8(ascii: "0"))
        }
        status = code
        keepAlive = minor == UInt8(ascii: "1")
        var length: Int?
        var chunked = false
        // Header lines: from after the status line to the empty line that ends the head.
        var lineStart = (bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex - 1) + 1
        while lineStart < bytes.endIndex {
            let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex
            var line = bytes[lineStart..<lineEnd]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            lineStart = lineEnd + 1
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = line[..<colon]
            let value = Self.trimmed(line[(colon + 1)...])
            if Self.equalsIgnoringCase(name, Self.contentLength) {
                var number = 0
                guard !value.isEmpty, value.count <= 12 else { return "a Content-Length that is not a number" }
                for byte in value {
                    guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return "a Content-Length that is not a number" }
                    number = number * 10 + Int(byte - UInt8(ascii: "0"))
                }
                if let length, length != number { return "two different Content-Lengths" }
                length = number
            } else if Self.equalsIgnoringCase(name, Self.transferEncoding) {
                // Chunked when it is the last coding named.
                chunked = Self.endsIgnoringCase(value, Self.chunkedWord)
            } else if Self.equalsIgnoringCase(name, Self.connection) {
                if Self.containsIgnoringCase(value, Self.closeWord) { keepAlive = false }
                if Self.containsIgnoringCase(value, Self.keepAliveWord) && minor == UInt8(ascii: "0") { keepAlive = true }
            }
        }
        body = ByteBuffer()
        // Answers that never have a body, whatever their headers say.
        if (100..<200).contains(status) || status == 204 || status == 304 {
            part = .fixed(remaining: 0)
        } else if chunked {
            part = .chunkSize
        } else if let length {
            guard length <= maxBodyBytes else { return "an answer over \(maxBodyBytes) bytes" }
            part = .fixed(remaining: length)
        } else {
            part = .untilClose
            keepAlive = false
        }
        return nil
    }

    // MARK: Bytes

    private static let headEnd: [UInt8] = Array("\r\n\r\n".utf8)
    private static let lineEnd: [UInt8] = Array("\r\n".utf8)
    private static let versionPrefix: [UInt8] = Array("HTTP/1.".utf8)
    private static let contentLength: [UInt8] = Array("content-length".utf8)
    private static let transferEncoding: [UInt8] = Array("transfer-encoding".utf8)
    private static let connection: [UInt8] = Array("connection".utf8)
    private static let chunkedWord: [UInt8] = Array("chunked".utf8)
    private static let closeWord: [UInt8] = Array("close".utf8)
    private static let keepAliveWord: [UInt8] = Array("keep-alive".utf8)

    /// The offset of `marker` in the buffer's readable bytes.
    private static func find(_ marker: [UInt8], in buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            guard bytes.count >= marker.count else { return nil }
            var index = 0
            let last = bytes.count - marker.count
            while index <= last {
                if bytes[index] == marker[0] {
                    var matched = 1
                    while matched < marker.count, bytes[index + matched] == marker[matched] { matched += 1 }
                    if matched == marker.count { return index }
                }
                index += 1
            }
            return nil
        }
    }

    private static func lowered(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte
    }

    private static func equalsIgnoringCase(_ bytes: ByteBufferView.SubSequence, _ word: [UInt8]) -> Bool {
        bytes.count == word.count && zip(bytes, word).allSatisfy { lowered($0) == $1 }
    }

    private static func endsIgnoringCase(_ bytes: ByteBufferView.SubSequence, _ word: [UInt8]) -> Bool {
        bytes.count >= word.count && equalsIgnoringCase(bytes.suffix(word.count), word)
    }

    private static func containsIgnoringCase(_ bytes: ByteBufferView.SubSequence, _ word: [UInt8]) -> Bool {
        guard bytes.count >= word.count else { return false }
        var start = bytes.startIndex
        while start + word.count <= bytes.endIndex {
            if equalsIgnoringCase(bytes[start..<(start + word.count)], word) { return true }
            start += 1
        }
        return false
    }

    private static func trimmed(_ bytes: ByteBufferView.SubSequence) -> ByteBufferView.SubSequence {
        let isSpace = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) }) else {
            return bytes[bytes.endIndex...]
        }
        return bytes[first...last]
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A")) + 10
        default: nil
        }
    }
}
