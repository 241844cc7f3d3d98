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
            // The limit holds however the head arrives: in pieces, or whole in one read.
            let end = Self.find(Self.headEnd, in: buffer)
            guard let end, end + 4 <= Self.maxHeadBytes else {
                return end != nil || buffer.readableBytes > Self.maxHeadBytes ? .invalid("an answer's head is over 64 KiB") : .needMore
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
        let framing = head.withUnsafeReadableBytes { Self.framing(of: $0) }
        if let problem = framing.problem { return problem }
        status = framing.status
        keepAlive = framing.minor == 1 ? !framing.close : framing.keepAlive && !framing.close
        body = ByteBuffer()
        // Answers that never have a body, whatever their headers say.
        if (100..<200).contains(status) || status == 204 || status == 304 {
            part = .fixed(remaining: 0)
        } else if framing.chunked {
            part = .chunkSize
        } else if let length = framing.length {
            guard length <= maxBodyBytes else { return "an answer over \(maxBodyBytes) bytes" }
            part = .fixed(remaining: length)
        } else {
            part = .untilClose
            keepAlive = false
        }
        return nil
    }

    private struct Framing {
        var problem: String?
        var status = 0
        var minor = 1
        var length: Int?
        var chunked = false
        var close = false
        var keepAlive = false
    }

    /// The status line and the three framing headers of a head (its bytes up to and with the empty line),
    /// read in place.
    private static func framing(of bytes: UnsafeRawBufferPointer) -> Framing {
        var framing = Framing()
        // "HTTP/1.1 201 Created\r\n": the version's minor digit, a space, three digits.
        guard bytes.count >= 14, Self.versionPrefix.indices.allSatisfy({ bytes[$0] == Self.versionPrefix[$0] }) else {
            framing.problem = "not an HTTP/1.x answer"
            return framing
        }
        guard bytes[7] == UInt8(ascii: "0") || bytes[7] == UInt8(ascii: "1"), bytes[8] == UInt8(ascii: " ") else {
            framing.problem = "not an HTTP/1.0 or 1.1 answer"
            return framing
        }
        framing.minor = Int(bytes[7] - UInt8(ascii: "0"))
        for index in 9..<12 {
            guard let digit = digit(bytes[index]) else {
                framing.problem = "a status that is not three digits"
                return framing
            }
            framing.status = framing.status * 10 + digit
        }
        // Header lines: from after the status line to the empty line that ends the head.
        var lineStart = 12
        while lineStart < bytes.count, bytes[lineStart] != UInt8(ascii: "\n") { lineStart += 1 }
        lineStart += 1
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count, bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            defer { lineStart = lineEnd + 1 }
            var end = lineEnd
            if end > lineStart, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            var colon = lineStart
            while colon < end, bytes[colon] != UInt8(ascii: ":") { colon += 1 }
            guard colon < end else { continue }
            var valueStart = colon + 1
            while valueStart < end, bytes[valueStart] == UInt8(ascii: " ") || bytes[valueStart] == UInt8(ascii: "\t") { valueStart += 1 }
            var valueEnd = end
            while valueEnd > valueStart, bytes[valueEnd - 1] == UInt8(ascii: " ") || bytes[valueEnd - 1] == UInt8(ascii: "\t") { valueEnd -= 1 }
            if equalsIgnoringCase(bytes, lineStart, colon, Self.contentLength) {
                guard valueEnd > valueStart, valueEnd - valueStart <= 12 else {
                    framing.problem = "a Content-Length that is not a number"
                    return framing
                }
                var number = 0
                for index in valueStart..<valueEnd {
                    guard let digit = digit(bytes[index]) else {
                        framing.problem = "a Content-Length that is not a number"
                        return framing
                    }
                    number = number * 10 + digit
                }
                if let length = framing.length, length != number {
                    framing.problem = "two different Content-Lengths"
                    return framing
                }
                framing.length = number
            } else if equalsIgnoringCase(bytes, lineStart, colon, Self.transferEncoding) {
                // Chunked when it is the last coding named.
                framing.chunked = valueEnd - valueStart >= Self.chunkedWord.count
                    && equalsIgnoringCase(bytes, valueEnd - Self.chunkedWord.count, valueEnd, Self.chunkedWord)
            } else if equalsIgnoringCase(bytes, lineStart, colon, Self.connection) {
                if containsIgnoringCase(bytes, valueStart, valueEnd, Self.closeWord) { framing.close = true }
                if containsIgnoringCase(bytes, valueStart, valueEnd, Self.keepAliveWord) { framing.keepAlive = true }
            }
        }
        return framing
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

    private static func digit(_ byte: UInt8) -> Int? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? Int(byte - UInt8(ascii: "0")) : nil
    }

    /// Whether `bytes[from..<to]` is `word` (lowercase), ignoring case.
    private static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ from: Int, _ to: Int, _ word: [UInt8]) -> Bool {
        guard to - from == word.count else { return false }
        for index in 0..<word.count where lowered(bytes[from + index]) != word[index] { return false }
        return true
    }

    private static func containsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ from: Int, _ to: Int, _ word: [UInt8]) -> Bool {
        var start = from
        while start + word.count <= to {
            if equalsIgnoringCase(bytes, start, start + word.count, word) { return true }
            start += 1
        }
        return false
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
