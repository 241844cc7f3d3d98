import NIOCore
import Testing

@testable import Load

/// The load generator reads every answer it measures with `ResponseReader`: a misread answer would count
/// a refusal as a grant, or an error as a success, in every report.
@Suite("the load generator's answer reader")
struct ResponseReaderTests {
    /// Feeds `text` in pieces of `piece` bytes; returns every step that was not `needMore`.
    func read(_ text: String, piece: Int, reader: inout ResponseReader) -> [ResponseReader.Step] {
        let bytes = Array(text.utf8)
        var steps: [ResponseReader.Step] = []
        var start = 0
        while start < bytes.count {
            var buffer = ByteBuffer(bytes: bytes[start..<min(bytes.count, start + piece)])
            var step = reader.read(&buffer)
            while step != .needMore {
                steps.append(step)
                guard case .answer = step else { break }
                // Two answers may arrive in one read: the second waits for the reader's next step.
                step = reader.next()
            }
            start += piece
        }
        return steps
    }

    func answer(_ status: Int, _ body: String, keepAlive: Bool = true) -> ResponseReader.Step {
        .answer(status: status, body: ByteBuffer(string: body), keepAlive: keepAlive)
    }

    @Test("a Content-Length answer, whole or split at every byte, and the next one on the same connection")
    func contentLength() {
        let text = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 13\r\n\r\n{\"id\":\"c-42\"}"
            + "HTTP/1.1 409 Conflict\r\nCONTENT-LENGTH: 2\r\n\r\n{}"
        for piece in [1, 2, 7, 64, 4096] {
            var reader = ResponseReader()
            let steps = read(text, piece: piece, reader: &reader)
            #expect(steps == [answer(201, #"{"id":"c-42"}"#), answer(409, "{}")], "pieces of \(piece)")
        }
    }

    @Test("a chunked answer with extensions and trailers, split at every byte")
    func chunked() {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nB\r\n, hailstorm\r\n0\r\nX-Trailer: 1\r\n\r\n"
        for piece in [1, 3, 4096] {
            var reader = ResponseReader()
            #expect(read(text, piece: piece, reader: &reader) == [answer(200, "hello, hailstorm")], "pieces of \(piece)")
            #expect(!reader.hasLeftover)
        }
    }

    @Test("an interim 100 Continue is skipped; 204 and 304 have no body")
    func interimAndEmpty() {
        var reader = ResponseReader()
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"
        #expect(read(text, piece: 4096, reader: &reader) == [answer(204, ""), answer(304, "")])
    }

    @Test("Connection: close, HTTP/1.0 and a body running to the close end the connection's use")
    func closing() {
        var reader = ResponseReader()
        #expect(read("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy", piece: 4096, reader: &reader)
            == [answer(503, "busy", keepAlive: false)])
        reader = ResponseReader()
        #expect(read("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", piece: 4096, reader: &reader) == [answer(200, "ok", keepAlive: false)])
        reader = ResponseReader()
        #expect(read("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", piece: 4096, reader: &reader)
            == [answer(200, "ok")])
        reader = ResponseReader()
        #expect(read("HTTP/1.1 200 OK\r\n\r\nuntil the end", piece: 5, reader: &reader).isEmpty)
        #expect(reader.isReading)
        #expect(reader.closed() == answer(200, "until the end", keepAlive: false))
        // A connection closing in the middle of a sized answer loses it, and says so.
        reader = ResponseReader()
        #expect(read("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", piece: 4096, reader: &reader).isEmpty)
        guard case .invalid = reader.closed() else {
            Issue.record("a half answer was taken as whole")
            return
        }
    }

    @Test("what is not an HTTP/1.x answer is refused with the reason, never read as one", arguments: [
        ("SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x answer"),
        ("HTTP/2.0 200 OK\r\n\r\n", "not an HTTP/1.x answer"),
        ("HTTP/1.2 200 OK\r\n\r\n", "not an HTTP/1.0 or 1.1 answer"),
        ("HTTP/1.1 2x1 Created\r\n\r\n", "a status that is not three digits"),
        ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "a Content-Length that is not a number"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "two different Content-Lengths"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "a chunk size that is not hexadecimal"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "a chunk not ended by CRLF"),
    ])
    func invalid(text: String, reason: String) {
        var reader = ResponseReader()
        #expect(read(text, piece: 4096, reader: &reader) == [.invalid(reason)])
    }

    @Test("a head that never ends and a body over the limit are refused, not gathered without bound")
    func limits() {
        var reader = ResponseReader()
        let endless = "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Padding: 0123456789\r\n", count: 4000)
        #expect(read(endless, piece: 8192, reader: &reader).first == .invalid("an answer's head is over 64 KiB"))
        // The same head, ended, arriving in one read.
        reader = ResponseReader()
        #expect(read(endless + "\r\n", piece: 1 << 20, reader: &reader) == [.invalid("an answer's head is over 64 KiB")])
        reader = ResponseReader(maxBodyBytes: 100)
        #expect(read("HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", piece: 4096, reader: &reader) == [.invalid("an answer over 100 bytes")])
        reader = ResponseReader(maxBodyBytes: 100)
        #expect(read("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + String(repeating: "a", count: 64) + "\r\n40\r\n", piece: 4096, reader: &reader)
            == [.invalid("an answer over 100 bytes")])
    }

    @Test("a new order's id and time, and a refusal's reason, are read off the answer as a parser reads them")
    func fields() {
        // As order writes a new ride (keys sorted, a move's reason quoting the rider).
        let order = #"{"createdAt":1796630400.25,"currency":"EUR","history":[{"actor":"r1","at":1796630400.25,"reason":"said \"id\":\"x\"","to":"created"}],"id":"o-0192","riderID":"r1","state":"created"}"#
        let reply = LoadContext.Reply(status: 201, bytes: ByteBuffer(string: order))
        #expect(reply.string(named: "id") == "o-0192")
        #expect(reply.number(named: "createdAt") == 1796630400.25)
        #expect(reply.string(named: "state") == "created")
        #expect(reply.problem == nil)
        // Written with spaces: parsed the general way, to the same values.
        let spaced = LoadContext.Reply(status: 201, bytes: ByteBuffer(string: #"{ "id" : "o-7", "createdAt" : 12.5 }"#))
        #expect(spaced.string(named: "id") == "o-7")
        #expect(spaced.number(named: "createdAt") == 12.5)
        #expect(spaced.string(named: "missing") == nil)
        let refused = LoadContext.Reply(status: 409, bytes: ByteBuffer(string: #"{"status":409,"type":"urn:hailstorm:problem:driver-busy"}"#))
        #expect(refused.problem == "driver-busy")
        #expect(refused.number(named: "status") == 409)
        // Cut off mid-value: no id and no time (the ride is not counted as accepted), never a crash.
        let cut = LoadContext.Reply(status: 201, bytes: ByteBuffer(string: #"{"createdAt":"#))
        #expect(cut.number(named: "createdAt") == nil)
        #expect(LoadContext.Reply(status: 201, bytes: ByteBuffer(string: #"{"id":"o-01"#)).string(named: "id") == nil)
        #expect(LoadContext.Reply(status: 201, bytes: ByteBuffer()).string(named: "id") == nil)
    }
}
