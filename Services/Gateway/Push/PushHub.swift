import Foundation
import Synchronization

/// The WebSocket connections this gateway instance holds, by user. A user may have several (phone and
/// tablet); each gets every push. Each connection remembers the session and token it was opened with, so
/// a sign-out closes exactly the sockets of that session.
final class PushHub: Sendable {
    private struct Connection {
        var continuation: AsyncStream<String>.Continuation
        var session: String?
        var token: String
    }
    private let connections = Mutex<[String: [UUID: Connection]]>([:])

    /// Registers a connection; its stream yields the pushes for `user` until `disconnect` or `revoke`.
    func connect(user: String, session: String?, token: String) -> (id: UUID, pushes: AsyncStream<String>) {
        let id = UUID()
        // A slow socket keeps at most the newest 256 pushes rather than growing without bound.
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(256))
        connections.withLock { $0[user, default: [:]][id] = Connection(continuation: continuation, session: session, token: token) }
        return (id, stream)
    }

    func disconnect(user: String, id: UUID) {
        let continuation = connections.withLock { connections -> AsyncStream<String>.Continuation? in
            let removed = connections[user]?.removeValue(forKey: id)
            if connections[user]?.isEmpty == true { connections[user] = nil }
            return removed?.continuation
        }
        continuation?.finish()
    }

    /// Ends the streams of `user`'s connections opened in `session` or with `token`; their sockets close.
    /// Returns how many.
    @discardableResult
    func revoke(user: String, session: String?, token: String?) -> Int {
        let ended = connections.withLock { connections -> [AsyncStream<String>.Continuation] in
            guard var mine = connections[user] else { return [] }
            let hit = mine.filter { _, connection in
                (session != nil && connection.session == session) || (token != nil && connection.token == token)
            }
            for id in hit.keys { mine[id] = nil }
            connections[user] = mine.isEmpty ? nil : mine
            return hit.values.map(\.continuation)
        }
        for continuation in ended { continuation.finish() }
        return ended.count
    }

    /// Hands `message` to every connection of `user` here; returns how many there were.
    @discardableResult
    func deliver(_ message: String, to user: String) -> Int {
        let targets = connections.withLock { ($0[user] ?? [:]).values.map(\.continuation) }
        for continuation in targets { continuation.yield(message) }
        return targets.count
    }

    var connectionCount: Int { connections.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}
