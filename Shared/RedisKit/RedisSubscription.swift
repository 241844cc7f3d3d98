import NIOCore
import Synchronization

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
/// Channels can be added (`subscribe`) and dropped (`unsubscribe`) while it runs.
public final class RedisSubscription: Sendable {
    public let messages: AsyncThrowingStream<PubSubMessage, any Error>
    private let connection: RedisConnection
    private let confirmations: SubscriptionConfirmations

    init(connection: RedisConnection, messages: AsyncThrowingStream<PubSubMessage, any Error>, confirmations: SubscriptionConfirmations) {
        self.connection = connection
        self.messages = messages
        self.confirmations = confirmations
    }

    /// Subscribes to `channels` too; returns once Redis has confirmed each, so nothing published to them
    /// after that is missed. Throws when the connection closes first, or (`timedOut`) when Redis has not
    /// confirmed within `timeout` (the subscription may still come).
    public func subscribe(channels: [String], timeout: Duration? = nil) async throws {
        guard !channels.isEmpty else { return }
        try await confirmations.awaiting(channels.map { .channel($0) }, on: connection.eventLoop, timeout: timeout) {
            try await connection.sendWithoutReply([RedisCommand("SUBSCRIBE", channels)])
        }
    }

    /// Stops receiving `channels`' messages (those already on their way may still arrive).
    public func unsubscribe(channels: [String]) async throws {
        guard !channels.isEmpty else { return }
        try await connection.sendWithoutReply([RedisCommand("UNSUBSCRIBE", channels)])
    }

    public func close() async {
        await connection.close()
    }
}

/// The subscriptions a subscriber connection is waiting for Redis to confirm, each completed by its
/// `subscribe`/`psubscribe` push, in the order they were asked for; all failed when the connection closes.
final class SubscriptionConfirmations: Sendable {
    enum Target: Hashable, Sendable {
        case channel(String)
        case pattern(String)
    }

    private struct State {
        var waiting: [Target: [EventLoopPromise<Void>]] = [:]
        var closed = false
    }
    private let state = Mutex(State())

    /// Runs `send` (which asks for `targets`) and waits until each is confirmed.
    func awaiting(_ targets: [Target], on eventLoop: any EventLoop, timeout: Duration? = nil, send: () async throws -> Void) async throws {
        let promises = targets.map { _ in eventLoop.makePromise(of: Void.self) }
        let closed = state.withLock { state -> Bool in
            guard !state.closed else { return true }
            for (target, promise) in zip(targets, promises) { state.waiting[target, default: []].append(promise) }
            return false
        }
        guard !closed else {
            for promise in promises { promise.fail(RedisError.connectionClosed("subscription connection closed")) }
            throw RedisError.connectionClosed("subscription connection closed")
        }
        do {
            try await send()
        } catch {
            fail(error)
            throw error
        }
        let all = EventLoopFuture.andAllSucceed(promises.map(\.futureResult), on: eventLoop)
        guard let timeout else { return try await all.get() }
        // Whichever comes first, on the loop: the confirmations, or the timeout.
        let result = eventLoop.makePromise(of: Void.self)
        let settled = Settled()
        let timer = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            guard settled.first() else { return }
            result.fail(RedisError.timedOut("Redis did not confirm the subscription within \(timeout)"))
        }
        all.whenComplete { outcome in
            timer.cancel()
            guard settled.first() else { return }
            result.completeWith(outcome)
        }
        try await result.futureResult.get()
    }

    /// True for the first caller only.
    private final class Settled: Sendable {
        private let done = Mutex(false)

        func first() -> Bool {
            done.withLock { done in
                defer { done = true }
                return !done
            }
        }
    }

    func confirmed(_ target: Target) {
        let promise = state.withLock { state -> EventLoopPromise<Void>? in
            guard var queue = state.waiting[target], !queue.isEmpty else { return nil }
            let first = queue.removeFirst()
            state.waiting[target] = queue.isEmpty ? nil : queue
            return first
        }
        promise?.succeed()
    }

    /// Fails everything waiting, and whatever asks from now on.
    func fail(_ error: any Error) {
        let promises = state.withLock { state -> [EventLoopPromise<Void>] in
            state.closed = true
            defer { state.waiting = [:] }
            return state.waiting.values.flatMap { $0 }
        }
        for promise in promises { promise.fail(error) }
    }
}

extension RedisClient {
    /// Subscribes to `channels` and to channels matching `patterns` (either may be empty; channels can be
    /// added later with `RedisSubscription.subscribe`). Returns once Redis has confirmed every
    /// subscription, so nothing published after that is missed.
    public func subscribe(channels: [String], patterns: [String] = []) async throws -> RedisSubscription {
        let (messages, continuation) = AsyncThrowingStream<PubSubMessage, any Error>.makeStream()
        let confirmations = SubscriptionConfirmations()
        let connection = try await connectAnywhere { push in
            guard let parts = push.array, let kind = parts.first?.string else { return }
            switch kind {
            case "message" where parts.count == 3:
                continuation.yield(PubSubMessage(channel: parts[1].string ?? "", payload: parts[2].bytes ?? []))
            case "pmessage" where parts.count == 4:
                continuation.yield(PubSubMessage(
                    channel: parts[2].string ?? "", payload: parts[3].bytes ?? [], pattern: parts[1].string))
            case "subscribe" where parts.count >= 2:
                confirmations.confirmed(.channel(parts[1].string ?? ""))
            case "psubscribe" where parts.count >= 2:
                confirmations.confirmed(.pattern(parts[1].string ?? ""))
            default:
                break
            }
        }
        connection.channel.closeFuture.whenComplete { _ in
            let closed = RedisError.connectionClosed("subscription connection closed")
            continuation.finish(throwing: closed)
            confirmations.fail(closed)
        }
        var commands: [RedisCommand] = []
        if !channels.isEmpty { commands.append(RedisCommand("SUBSCRIBE", channels)) }
        if !patterns.isEmpty { commands.append(RedisCommand("PSUBSCRIBE", patterns)) }
        do {
            try await confirmations.awaiting(channels.map { .channel($0) } + patterns.map { .pattern($0) }, on: connection.eventLoop) {
                if !commands.isEmpty { try await connection.sendWithoutReply(commands) }
            }
        } catch {
            await connection.close()
            throw error
        }
        return RedisSubscription(connection: connection, messages: messages, confirmations: confirmations)
    }
}
