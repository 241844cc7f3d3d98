import Contracts
import Foundation
import HailKit
import Logging
import Metrics
import RedisKit
import ServiceLifecycle

/// Listens on Redis pub/sub for every user's pushes (`push:user:*`) and writes those of the users
/// connected here to their sockets, and for ended sessions (`auth:revoked`), whose sockets it closes.
/// Every gateway instance runs one, so a push reaches the user on whichever instance holds the
/// connection. Resubscribes after Redis drops the connection.
struct PushListener: Service {
    let redis: RedisClient
    let hub: PushHub
    /// Fed with every revocation, and told when the subscription is lost (it may miss some then).
    let revocations: Revocations
    let logger: Logger

    func run() async throws {
        let prefix = PushMessage.channel(user: "")
        var failures = 0
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                let subscription = try await redis.subscribe(
                    channels: [SessionRevocation.channel], patterns: [PushMessage.channelPattern])
                failures = 0
                // Subscribed first, then the deny-list read: nothing revoked in between is missed.
                do {
                    try await revocations.reload(redis: redis)
                } catch {
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
                        guard message.channel.hasPrefix(prefix) else { continue }
                        let user = String(message.channel.dropFirst(prefix.count))
                        if hub.deliver(message.text, to: user) > 0 {
                            Counter(label: "hailstorm_push_delivered_total").increment()
                        }
                    }
                }
                revocations.lost()
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
