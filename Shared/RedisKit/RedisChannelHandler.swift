import NIOCore

/// What the connection writes into its channel: a batch of commands and where their replies go.
struct RedisRequest {
    var commands: [RedisCommand]
    /// Completed with one reply per command, in order. `nil` for subscriber connections, whose replies are pushes.
    var promise: EventLoopPromise<[RESPValue]>?
}

/// Encodes command batches with hiredis, parses replies with hiredis's reader, and matches replies to
/// batches in order — which is what makes pipelining work: many batches can be in flight on one socket.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        let count: Int
        let promise: EventLoopPromise<[RESPValue]>
    }

    private let reader = HiredisReader()
    private var pending = CircularBuffer<Pending>(initialCapacity: 16)
    /// Replies gathered so far for the oldest pending batch.
    private var replies: [RESPValue] = []
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private var closedError: RedisError?

    init(onPush: (@Sendable (RESPValue) -> Void)? = nil) {
        self.onPush = onPush
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = self.unwrapOutboundIn(data)
        if let closedError {
            request.promise?.fail(closedError)
            promise?.fail(closedError)
            return
        }
        var size = 0
        for command in request.commands { size += command.encoded.count }
        var buffer = context.channel.allocator.buffer(capacity: size)
        for command in request.commands {
            buffer.writeBytes(command.encoded)
        }
        if let replyPromise = request.promise {
            if request.commands.isEmpty {
                replyPromise.succeed([])
            } else {
                pending.append(Pending(count: request.commands.count, promise: replyPromise))
            }
        }
        context.write(self.wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        reader.feed(buffer)
        do {
            while let value = try reader.next() {
                deliver(value)
            }
        } catch {
            failAll(error as? RedisError ?? .protocolError("\(error)"))
            context.close(promise: nil)
        }
    }

    private func deliver(_ value: RESPValue) {
        guard let oldest = pending.first else {
            onPush?(value)
            return
        }
        if replies.isEmpty { replies.reserveCapacity(oldest.count) }
        replies.append(value)
        if replies.count == oldest.count {
            pending.removeFirst()
            let done = replies
            replies = []
            oldest.promise.succeed(done)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionClosed())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(.connectionClosed("\(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        closedError = closedError ?? error
        replies = []
        while let next = pending.popFirst() {
            next.promise.fail(error)
        }
    }
}
