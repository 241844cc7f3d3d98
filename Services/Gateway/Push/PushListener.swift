import Contracts
import Foundation
import HailKit
import Logging
import Metrics
import RedisKit
import ServiceLifecycle

/// Listens on Redis pub/sub for the pushes of the users connected here (`push:user:<id>`, one channel
/// each, subscribed while the user has a socket here: `PushSubscriptions`) and writes them to their
/// sockets, and for ended sessions (`auth:revoked`), whose sockets it closes. Every gateway instance runs
/// one, so a push reaches the user on whichever instance holds the connection, and an instance hears
/// only of its own users. Resubscribes after Redis drops the connection.
struct PushListener: Service {
    let redis: RedisClient
    let hub: PushHub
    let subscriptions: PushSubscriptions
    /// Fed with every revocation, and told when the subscription is lost (it may miss some then).
    let revocations: Revocations
    let logger: Logger

    func run() async throws {
        var failures = 0
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let subscription = try await redis.subscribe(channels: [SessionRevocation.channel])
                failures = 0
                // Subscribed first, then the deny-list read: nothing revoked in between is missed. The
                // users with a socket here are subscribed again on the new connection.
                do {
                    try await revocations.reload(redis: redis)
                    try await subscriptions.attach(subscription)
                } catch {
                    await subscriptions.detach(subscription)
                    await subscription.close()
                    throw error
                }
                try await cancelWhenGracefulShutdown {
                    for try await message in subscription.messages {
                        if message.channel == SessionRevocation.channel {
                            revocations.apply(message: message.text)
                            if let revocation = try? JSONDecoder().decode(SessionRevocation.self, from: Data(message.text.utf8)) {
                                let closed = hub.revoke(user: revocation.userID, session: revocation.sessionID, token: revocation.tokenID)
                                if closed > 0 { logger.info("sockets of an ended session closed", metadata: ["count": "\(closed)"]) }
                            }
                            continue
                        }
                        hub.deliver(push: message)
                    }
                }
                revocations.lost()
                await subscriptions.detach(subscription)
                await subscription.close()
            } catch is CancellationError {
                revocations.lost()
                break
            } catch {
                revocations.lost()
                failures += 1
                logger.warning("push subscription lost; resubscribing", metadata: ["error": "\(error)"])
                let pause = Duration.milliseconds(min(100 * failures, 2000))
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
            }
        }
    }
}

/// Writes the pushes that come through the sharded subscription (a Redis Cluster) to their users'
/// sockets, as `PushListener` does for the classic one.
struct ShardedPushListener: Service {
    let subscription: RedisShardedSubscription
    let hub: PushHub

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            for try await message in subscription.messages { hub.deliver(push: message) }
        }
        await subscription.close()
    }
}

extension PushHub {
    /// Writes a message of a user's push channel (`push:user:<id>`) to that user's sockets here.
    func deliver(push message: PubSubMessage) {
        let prefix = PushMessage.channel(user: "")
        guard message.channel.hasPrefix(prefix) else { return }
        if deliver(message.text, to: String(message.channel.dropFirst(prefix.count))) > 0 {
            Counter(label: "hailstorm_push_delivered_total").increment()
        }
    }
}

/// The push channels this instance subscribes to: a user's while they have a socket here. A socket joins
/// before its hello and waits until Redis has confirmed the user's channel, so every push published after
/// the hello reaches it; the user's last socket leaving drops the channel. Duplicate subscriptions (a
/// second socket of the same user) are harmless: Redis confirms them and delivers each message once.
///
/// On a Redis Cluster the channels are sharded (`sharded`: `SSUBSCRIBE` on the master of each channel's
/// slot, which follows the slot when it moves), so a push travels through one master rather than every
/// node; on one server they ride the listener's classic subscription.
actor PushSubscriptions {
    private var subscription: RedisSubscription?
    private var sockets: [String: Int] = [:]
    let sharded: RedisShardedSubscription?

    init(sharded: RedisShardedSubscription? = nil) {
        self.sharded = sharded
    }

    /// A socket of `user` opened: their channel is subscribed (and confirmed, waiting at most `patience`
    /// for a Redis that does not answer) when a subscription is up; otherwise it will be when the next one
    /// is attached (or, sharded, as soon as its master answers).
    func join(_ user: String, patience: Duration = .seconds(2)) async {
        sockets[user, default: 0] += 1
        if let sharded {
            try? await sharded.subscribe(channels: [PushMessage.channel(user: user)], timeout: patience)
            return
        }
        guard let subscription else { return }
        try? await subscription.subscribe(channels: [PushMessage.channel(user: user)], timeout: patience)
    }

    /// A socket of `user` closed; the last one drops their channel.
    func leave(_ user: String) async {
        guard let count = sockets[user] else { return }
        guard count <= 1 else {
            sockets[user] = count - 1
            return
        }
        sockets[user] = nil
        if let sharded {
            await sharded.unsubscribe(channels: [PushMessage.channel(user: user)])
            return
        }
        try? await subscription?.unsubscribe(channels: [PushMessage.channel(user: user)])
    }

    /// A new subscription connection: every user with a socket here is subscribed on it (unless the
    /// users' channels are sharded, which keep their own connections).
    func attach(_ subscription: RedisSubscription) async throws {
        self.subscription = subscription
        guard sharded == nil else { return }
        let channels = sockets.keys.map { PushMessage.channel(user: $0) }
        var start = 0
        while start < channels.count {
            let chunk = Array(channels[start..<min(start + 1000, channels.count)])
            try await subscription.subscribe(channels: chunk)
            start += chunk.count
        }
    }

    func detach(_ subscription: RedisSubscription) {
        if self.subscription === subscription { self.subscription = nil }
    }

    var channelCount: Int { sockets.count }
}
