import NIOCore
import Testing

@testable import HailKit

/// How the service client reads another service's answers off the wire: whatever way a server frames
/// them and however TCP splits them, the caller gets the whole answer, and a connection whose answer does
/// not frame is not used again.
@Suite("HTTP/1.1 answers read on bytes")
struct HTTP1WireTests {
    /// Feeds `wire` to a parser in pieces of `piece` bytes, keeping what it has not consumed, as a
    /// connection does; the answers read, with whether each left the connection reusable.
    static func read(_ wire: String, piece: Int, noBody: Bool = false) throws -> [(HTTP1Answer, keepAlive: Bool)] {
        var parser = HTTP1AnswerParser(maxBodyBytes: 1 << 20)
        var answers: [(HTTP1Answer, keepAlive: Bool)] = []
        var unread = ByteBuffer()
        let bytes = Array(wire.utf8)
        for start in stride(from: 0, to: bytes.count, by: piece) {
            unread.writeBytes(bytes[start..<min(bytes.count, start + piece)])
            while unread.readableBytes > 0, let answer = try parser.read(&unread, noBody: noBody) {
                answers.append(answer)
            }
        }
        if let last = parser.closed() { answers.append((last, false)) }
        return answers
    }

    @Test("a chunked answer after a 100 Continue, split into single bytes, arrives whole with its headers", arguments: [1, 3, 1000])
    func chunkedInPieces(piece: Int) throws {
        let wire =
            "HTTP/1.1 100 Continue\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json \r\nRetry-After:\t7\r\n\r\n"
            + "4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n"
            + "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}"
        let answers = try Self.read(wire, piece: piece)
        try #require(answers.count == 2)
        #expect(answers[0].0.status == 200)
        #expect(String(buffer: answers[0].0.body) == #"{"a":1}"#)
        #expect(answers[0].0.header("content-type") == "application/json")
        #expect(answers[0].0.header("Retry-After") == "7")
        #expect(answers[0].keepAlive)
        #expect(answers[1].0.status == 404)
        #expect(String(buffer: answers[1].0.body) == "{}")
        #expect(answers[1].0.fields[.contentLength] == "2")
    }

    @Test("Connection: close, HTTP/1.0 and a body that runs to the close leave the connection unused after the answer")
    func notReusable() throws {
        let closing = try Self.read("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", piece: 5)
        #expect(closing.map(\.keepAlive) == [false])
        let toClose = try Self.read("HTTP/1.0 200 OK\r\n\r\nall of it", piece: 4)
        #expect(toClose.map { String(buffer: $0.0.body) } == ["all of it"])
        #expect(toClose.map(\.keepAlive) == [false])
        let head = try Self.read("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", piece: 7, noBody: true)
        #expect(head.map { $0.0.body.readableBytes } == [0])
        #expect(head.map(\.keepAlive) == [true])
    }

    @Test("answers that do not frame are errors, not guesses", arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "SSH-2.0-OpenSSH_9.2\r\n\r\n",
    ])
    func malformed(wire: String) {
        #expect(throws: HTTP1AnswerParser.Failure.self) { _ = try Self.read(wire, piece: 64) }
    }

    @Test("an answer larger than the client accepts is refused before it is read whole")
    func tooLarge() {
        var parser = HTTP1AnswerParser(maxBodyBytes: 8)
        var bytes = ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
        #expect(throws: HTTP1AnswerParser.Failure.tooLarge) { _ = try parser.read(&bytes, noBody: false) }
    }
}
