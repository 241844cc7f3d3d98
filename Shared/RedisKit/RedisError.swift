/// An error of the Redis client.
///
/// A struct wrapping a private code, so new cases can be added without breaking callers.
public struct RedisError: Error, Hashable, CustomStringConvertible {
    private enum Code: Hashable {
        case server
        case connectionClosed
        case connectFailed
        case protocolError
        case unexpectedReply
        case clientShutdown
        case timedOut
        case overloaded
        case notSent
    }

    private let code: Code
    /// What went wrong, in words; for a server error, Redis's own message (`NOSCRIPT …`, `WRONGTYPE …`).
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Redis answered the command with an error reply.
    public static func server(_ message: String) -> RedisError { .init(.server, message) }
    /// The connection closed before the reply arrived; the command may or may not have run.
    public static func connectionClosed(_ detail: String = "connection closed") -> RedisError { .init(.connectionClosed, detail) }
    /// No connection could be made; the command was never sent.
    public static func connectFailed(_ detail: String) -> RedisError { .init(.connectFailed, detail) }
    /// hiredis could not parse what the server sent.
    public static func protocolError(_ detail: String) -> RedisError { .init(.protocolError, detail) }
    /// The reply did not have the shape the command promises.
    public static func unexpectedReply(_ detail: String) -> RedisError { .init(.unexpectedReply, detail) }
    /// The server did not answer within the command timeout; the connection was closed. The command may
    /// or may not have run.
    public static func timedOut(_ detail: String) -> RedisError { .init(.timedOut, detail) }
    /// Too many commands already wait for replies on the connection; this one was not sent.
    public static func overloaded(_ detail: String) -> RedisError { .init(.overloaded, detail) }
    /// The connection had closed before the command was written (its server died a moment ago): the
    /// command did not run, and may be sent again on a new connection.
    public static func notSent(_ detail: String) -> RedisError { .init(.notSent, detail) }
    /// The client was shut down.
    public static let clientShutdown = RedisError(.clientShutdown, "client shut down")

    public var isServerError: Bool { code == .server }
    /// The connection could not be made (refused, unreachable, or not within the connect timeout).
    public var isConnectFailure: Bool { code == .connectFailed }
    /// True when the command was certainly not executed (no connection), so a retry is safe.
    public var commandNotSent: Bool { code == .connectFailed || code == .clientShutdown || code == .overloaded || code == .notSent }
    public var isConnectionError: Bool { code == .connectionClosed || code == .connectFailed || code == .timedOut || code == .notSent }
    /// The server did not answer in time.
    public var isTimeout: Bool { code == .timedOut }

    /// The first word of a server error (`NOSCRIPT`, `BUSYGROUP`, `WRONGTYPE`…).
    public var serverErrorPrefix: String? {
        guard code == .server else { return nil }
        return message.split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    public var description: String {
        switch code {
        case .server: return "Redis error: \(message)"
        case .connectionClosed: return "Redis connection closed: \(message)"
        case .connectFailed: return "cannot connect to Redis: \(message)"
        case .protocolError: return "Redis protocol error: \(message)"
        case .unexpectedReply: return "unexpected Redis reply: \(message)"
        case .clientShutdown: return "Redis client shut down"
        case .timedOut: return "Redis did not answer: \(message)"
        case .overloaded: return "Redis connection overloaded: \(message)"
        case .notSent: return "Redis connection closed before the command was sent: \(message)"
        }
    }
}
