/// A message received on a subscribed channel.
public struct PubSubMessage: Sendable, Hashable {
    public var channel: String
    public var payload: [UInt8]
    /// The pattern that matched, for `PSUBSCRIBE` subscriptions.
    public var pattern: String?

    public var text: String { String(decoding: payload, as: UTF8.self) }
}

/// A subscriber connection: pub/sub needs a connection of its own, since once subscribed it only
/// receives pushes. `messages` ends with an error when the connection drops; subscribe again then.
public final class RedisSubscription: Sendable {
    public let messages: AsyncThrowingStream<PubSubMessage, any Error>
    private let connection: RedisConnection

    init(connection: RedisConnection, messages: AsyncThrowingStream<PubSubMessage, any Error>) {
        self.connection = connection
        self.messages = messages
    }

    public func close() async {
        await connection.close()
    }
}

extension RedisClient {
    /// Subscribes to `channels` and to channels matching `patterns`.
    /// Returns once Redis has confirmed every subscription, so nothing published after that is missed.
    public func subscribe(channels: [String], patterns: [String] = []) async throws -> RedisSubscription {
        let (messages, continuation) = AsyncThrowingStream<PubSubMessage, any Error>.makeStream()
        let (confirmations, confirmed) = AsyncStream<Void>.makeStream()
        let connection = try await connectAnywhere { push in
            guard let parts = push.array, let kind = parts.first?.string else { return }
            switch kind {
            case "message" where parts.count == 3:
                continuation.yield(PubSubMessage(channel: parts[1].string ?? "", payload: parts[2].bytes ?? []))
            case "pmessage" where parts.count == 4:
                continuation.yield(PubSubMessage(
                    channel: parts[2].string ?? "", payload: parts[3].bytes ?? [], pattern: parts[1].string))
            case "subscribe", "psubscribe":
                confirmed.yield()
            default:
                break
            }
        }
        connection.channel.closeFuture.whenComplete { _ in
            continuation.finish(throwing: RedisError.connectionClosed("subscription connection closed"))
            confirmed.finish()
        }
        var commands: [RedisCommand] = []
        if !channels.isEmpty { commands.append(RedisCommand("SUBSCRIBE", channels)) }
        if !patterns.isEmpty { commands.append(RedisCommand("PSUBSCRIBE", patterns)) }
        try await connection.sendWithoutReply(commands)
        var remaining = channels.count + patterns.count
        for await _ in confirmations {
            remaining -= 1
            if remaining == 0 { break }
        }
        if remaining > 0 { throw RedisError.connectionClosed("closed before subscribing") }
        return RedisSubscription(connection: connection, messages: messages)
    }
}
