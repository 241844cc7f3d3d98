import NIOCore
import Synchronization

/// Sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7): a channel's messages travel only through the
/// master that serves the channel's slot, instead of being broadcast to every node of a cluster as a
/// classic `PUBLISH` is. So a subscriber holds a connection to each master that serves one of its
/// channels, and follows the channels when their slots move:
///
/// - a channel is subscribed on its slot's master, each slot's channels in one `SSUBSCRIBE`;
/// - when Redis drops a channel by itself (its slot migrated, `sunsubscribe` unasked), refuses one
///   (`MOVED` while the map was old), or a master's connection closes (it died; its replica is promoted),
///   the slot map is read again and the channels it held are subscribed where they are served now,
///   retried with backoff until they are (or the subscription is closed);
/// - messages of every connection come out of one `messages` stream, which ends only at `close`.
///
/// Messages published while a channel is being moved are lost, as pub/sub loses what is published
/// while nobody listens. On a single server (no cluster) it is the same with one connection.
public actor RedisShardedSubscription {
    public nonisolated let messages: AsyncThrowingStream<PubSubMessage, any Error>
    private nonisolated let continuation: AsyncThrowingStream<PubSubMessage, any Error>.Continuation
    private let client: RedisClient

    private struct Link {
        var connection: RedisConnection
        var confirmations: SubscriptionConfirmations
    }

    /// Channels the owner asked for and has not dropped.
    private var wanted: Set<String> = []
    /// Where each wanted channel is subscribed now; a wanted channel missing here is to be placed.
    private var placed: [String: RedisNode] = [:]
    private var links: [RedisNode: Link] = [:]
    private var repairing = false
    private var watching = false
    private var closed = false
    /// How often the placement is checked against a freshly read slot map.
    private let checkEvery: Duration

    init(client: RedisClient, checkEvery: Duration = .seconds(5)) {
        self.client = client
        self.checkEvery = checkEvery
        (messages, continuation) = AsyncThrowingStream<PubSubMessage, any Error>.makeStream()
    }

    /// The channels wanted now (what is subscribed, or will be once their node answers).
    public var channels: Set<String> { wanted }

    /// Where the channels are subscribed now, and the nodes it holds connections to.
    var placement: (placed: [String: RedisNode], links: [RedisNode], repairing: Bool) { (placed, Array(links.keys), repairing) }

    /// Subscribes to `channels`; returns once the masters serving them have confirmed each, so nothing
    /// published to them after that is missed. When that fails (a node does not answer, or not within
    /// `timeout`), the channels stay wanted and are subscribed as soon as their node answers; the error
    /// is thrown.
    public func subscribe(channels: [String], timeout: Duration? = nil) async throws {
        for channel in channels { wanted.insert(channel) }
        // A channel already subscribed was confirmed then; one still on its way is asked for again.
        let unplaced = channels.filter { placed[$0] == nil }
        guard !unplaced.isEmpty, !closed else { return }
        if !watching, client.isCluster {
            watching = true
            Task { await watch() }
        }
        do {
            try await place(unplaced, timeout: timeout)
        } catch {
            repairSoon()
            throw error
        }
    }

    /// Stops receiving `channels`' messages (those already on their way may still arrive).
    public func unsubscribe(channels: [String]) async {
        var byNode: [RedisNode: [String]] = [:]
        for channel in channels where wanted.remove(channel) != nil {
            if let node = placed.removeValue(forKey: channel) { byNode[node, default: []].append(channel) }
        }
        for (node, channels) in byNode { await drop(channels, on: node) }
    }

    /// `SUNSUBSCRIBE`s `channels` on the connection to `node`, if there is one (best effort: a connection
    /// that fails takes its subscriptions with it).
    private func drop(_ channels: [String], on node: RedisNode) async {
        guard !channels.isEmpty, let link = links[node] else { return }
        try? await link.connection.sendWithoutReply(Self.perSlot("SUNSUBSCRIBE", channels))
    }

    /// Closes every connection and ends `messages`.
    public func close() async {
        closed = true
        let open = links.values.map(\.connection)
        links = [:]
        for connection in open { await connection.close() }
        continuation.finish()
    }

    // MARK: Placing channels

    /// `command` for `channels`, one per slot: a sharded command's channels must all lie in one.
    private static func perSlot(_ command: String, _ channels: [String]) -> [RedisCommand] {
        Dictionary(grouping: channels) { HashSlot.of($0) }.values.map { RedisCommand(command, $0) }
    }

    /// Subscribes `channels` on the masters serving them now, grouped by node and slot.
    private func place(_ channels: [String], timeout: Duration?) async throws {
        var byNode: [RedisNode: [String]] = [:]
        for channel in channels {
            byNode[try await client.node(forKey: channel), default: []].append(channel)
        }
        var firstError: (any Error)? = nil
        for (node, channels) in byNode {
            do {
                let link = try await link(to: node)
                let commands = Self.perSlot("SSUBSCRIBE", channels)
                try await link.confirmations.awaiting(channels.map { .channel($0) }, on: link.connection.eventLoop, timeout: timeout) {
                    try await link.connection.sendWithoutReply(commands)
                }
                for channel in channels where wanted.contains(channel) { placed[channel] = node }
                // Dropped while their subscription was on its way: dropped there too.
                await drop(channels.filter { !wanted.contains($0) }, on: node)
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
    }

    /// The subscriber connection to `node`, opened when there is none.
    private func link(to node: RedisNode) async throws -> Link {
        if let link = links[node] { return link }
        let confirmations = SubscriptionConfirmations()
        // The connection's closures hold this subscription until `close` closes the connection.
        let connection = try await client.connect(to: node) { [continuation] push in
            Self.received(push, continuation: continuation, confirmations: confirmations) { lost in
                Task { await self.lost(lost, on: node) }
            }
        }
        let link = Link(connection: connection, confirmations: confirmations)
        if let raced = links[node] {
            // Another caller connected meanwhile: keep theirs.
            await connection.close()
            return raced
        }
        links[node] = link
        connection.channel.closeFuture.whenComplete { _ in
            confirmations.fail(RedisError.connectionClosed("sharded subscription connection to \(node) closed"))
            Task { await self.closed(connection, node: node) }
        }
        return link
    }

    /// One push of a subscriber connection, on its event loop: a message, a confirmation, or word that
    /// Redis dropped channels (`sunsubscribe` unasked, or an error reply) that `lost` is told of (an empty
    /// list: which ones is unknown).
    private static func received(
        _ push: RESPValue, continuation: AsyncThrowingStream<PubSubMessage, any Error>.Continuation,
        confirmations: SubscriptionConfirmations, lost: @Sendable ([String]) -> Void
    ) {
        if case .error = push {
            lost([])
            return
        }
        guard let parts = push.array, let kind = parts.first?.string else { return }
        switch kind {
        case "smessage" where parts.count == 3:
            continuation.yield(PubSubMessage(channel: parts[1].string ?? "", payload: parts[2].bytes ?? []))
        case "ssubscribe" where parts.count >= 2:
            confirmations.confirmed(.channel(parts[1].string ?? ""))
        case "sunsubscribe" where parts.count >= 2:
            lost([parts[1].string ?? ""])
        default:
            break
        }
    }

    /// Redis dropped `channels` on `node` (all of them when empty): those still wanted and placed there are
    /// placed again.
    private func lost(_ channels: [String], on node: RedisNode) {
        let dropped = channels.isEmpty ? placed.filter { $0.value == node }.map(\.key) : channels
        var any = false
        for channel in dropped where wanted.contains(channel) && placed[channel] == node {
            placed[channel] = nil
            any = true
        }
        // An error reply may also be the answer to a subscription still unconfirmed: read the map again.
        if any || channels.isEmpty { repairSoon() }
    }

    private func closed(_ connection: RedisConnection, node: RedisNode) {
        guard links[node]?.connection === connection else { return }
        links[node] = nil
        for (channel, at) in placed where at == node { placed[channel] = nil }
        repairSoon()
    }

    /// Every `checkEvery`, reads the slot map again and moves the channels subscribed on a node that no
    /// longer serves their slot: a master that died can leave its connection open (a child process still
    /// holding the socket), and a slot can move without a word to its subscribers.
    private func watch() async {
        while !closed {
            client.refreshClusterMap()
            try? await Task.sleep(for: checkEvery)
            guard !closed else { return }
            var stale: [RedisNode: [String]] = [:]
            for (channel, node) in placed {
                guard let owner = try? await client.node(forKey: channel), owner != node, placed[channel] == node else { continue }
                placed[channel] = nil
                stale[node, default: []].append(channel)
            }
            // Connections to nodes that serve nothing of ours and are no masters now are closed.
            if let masters = try? await client.masters() {
                for (node, link) in links where !masters.contains(node) && !placed.values.contains(node) {
                    links[node] = nil
                    await link.connection.close()
                }
            }
            guard !stale.isEmpty else { continue }
            for (node, channels) in stale { await drop(channels, on: node) }
            repairSoon()
        }
    }

    /// Places every wanted channel that is not placed, reading the slot map again first, with backoff,
    /// until all are (one repair at a time).
    private func repairSoon() {
        guard !repairing, !closed else { return }
        repairing = true
        Task { await repair() }
    }

    private func repair() async {
        var failures = 0
        while !closed {
            let missing = wanted.filter { placed[$0] == nil }
            if missing.isEmpty { break }
            client.refreshClusterMap()
            try? await Task.sleep(for: .milliseconds(min(100 * (1 << min(failures, 5)), 2000)))
            do {
                try await place(Array(missing), timeout: .seconds(2))
                failures = 0
            } catch {
                failures += 1
            }
        }
        repairing = false
    }
}

extension RedisClient {
    /// A sharded subscriber (`SSUBSCRIBE`), subscribed to nothing yet: channels are added with
    /// `subscribe` and dropped with `unsubscribe`; it connects to a master when it first needs it.
    public func shardedSubscription() -> RedisShardedSubscription {
        RedisShardedSubscription(client: self)
    }

    /// The server that serves `key`: its slot's master in a cluster, the server otherwise.
    func node(forKey key: String) async throws -> RedisNode {
        guard let cluster else { return RedisNode(host: configuration.host, port: configuration.port) }
        return try await cluster.node(forKey: key)
    }

    /// A connection of its own to `node` (the server, on one), its pushes to `onPush`; a node that cannot
    /// be reached has the slot map read again.
    func connect(to node: RedisNode, onPush: (@Sendable (RESPValue) -> Void)? = nil) async throws -> RedisConnection {
        guard let cluster else { return try await RedisConnection.connect(to: configuration, on: group, onPush: onPush) }
        do {
            return try await RedisConnection.connect(to: cluster.configuration(for: node), on: group, onPush: onPush)
        } catch let error as RedisError where error.isConnectFailure {
            cluster.refreshSoon()
            throw error
        }
    }

    /// Reads a cluster's slot map again soon (nothing on a single server).
    func refreshClusterMap() {
        cluster?.refreshSoon()
    }
}
