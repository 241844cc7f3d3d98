import Foundation
import Synchronization

/// The WebSocket connections this gateway instance holds, by user. A user may have several (phone and
/// tablet); each gets every push.
final class PushHub: Sendable {
    private let connections = Mutex<[String: [UUID: AsyncStream<String>.Continuation]]>([:])

    /// Registers a connection; its stream yields the pushes for `user` until `disconnect`.
    func connect(user: String) -> (id: UUID, pushes: AsyncStream<String>) {
        let id = UUID()
        // A slow socket keeps at most the newest 256 pushes rather than growing without bound.
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(256))
        connections.withLock { $0[user, default: [:]][id] = continuation }
        return (id, stream)
    }

    func disconnect(user: String, id: UUID) {
        let continuation = connections.withLock { connections -> AsyncStream<String>.Continuation? in
            let removed = connections[user]?.removeValue(forKey: id)
            if connections[user]?.isEmpty == true { connections[user] = nil }
            return removed
        }
        continuation?.finish()
    }

    /// Hands `message` to every connection of `user` here; returns how many there were.
    @discardableResult
    func deliver(_ message: String, to user: String) -> Int {
        let targets = connections.withLock { Array(($0[user] ?? [:]).values) }
        for continuation in targets { continuation.yield(message) }
        return targets.count
    }

    var connectionCount: Int { connections.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}
