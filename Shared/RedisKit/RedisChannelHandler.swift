import NIOCore

/// What the connection writes into its channel: a batch of commands and where their replies go.
struct RedisRequest {
    var commands: [RedisCommand]
    /// Completed with one reply per command, in order. `nil` for subscriber connections, whose replies are pushes.
    var promise: EventLoopPromise<[RESPValue]>?
    /// Time the server may take beyond the connection's command timeout (a blocking read's `BLOCK`).
    var allowance: TimeAmount = .zero
}

/// Encodes command batches with hiredis, parses replies with hiredis's reader, and matches replies to
/// batches in order — which is what makes pipelining work: many batches can be in flight on one socket.
///
/// Bounded both ways: at most `maxPending` batches wait for replies (more fail at once with
/// `RedisError.overloaded`, never sent), and when the oldest has waited past the command timeout the
/// server is taken for hung: every waiting batch fails with `RedisError.timedOut` and the connection
/// closes, so the pool opens a fresh one. One timer per connection checks the oldest batch, so a command
/// costs no timer of its own.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        let count: Int
        let promise: EventLoopPromise<[RESPValue]>
        /// When the reply is overdue.
        let due: NIODeadline
    }

    private let reader = HiredisReader()
    private var pending = CircularBuffer<Pending>(initialCapacity: 16)
    /// Replies gathered so far for the oldest pending batch.
    private var replies: [RESPValue] = []
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private var closedError: RedisError?
    private let timeout: TimeAmount?
    private let maxPending: Int
    private var watchdog: RepeatedTask?

    init(onPush: (@Sendable (RESPValue) -> Void)? = nil, timeout: TimeAmount? = nil, maxPending: Int = .max) {
        self.onPush = onPush
        self.timeout = timeout
        self.maxPending = max(1, maxPending)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard let timeout, timeout > .zero else { return }
        // Checked four times per timeout: a hung server is noticed at most a quarter late.
        let period = max(TimeAmount.milliseconds(10), .nanoseconds(timeout.nanoseconds / 4))
        // Cancelled in `handlerRemoved`, which ends the reference the task holds.
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        watchdog = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            bound.value.handler.checkOverdue(context: bound.value.context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        watchdog?.cancel()
        watchdog = nil
    }

    private func checkOverdue(context: ChannelHandlerContext) {
        guard let oldest = pending.first, oldest.due <= .now(), let timeout else { return }
        failAll(.timedOut("no reply within \(timeout.nanoseconds / 1_000_000) ms"))
        context.close(promise: nil)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = self.unwrapOutboundIn(data)
        if let closedError {
            // Nothing of this request was written: it did not run, whatever closed the connection.
            let error = RedisError.notSent("\(closedError)")
            request.promise?.fail(error)
            promise?.fail(error)
            return
        }
        if request.promise != nil, pending.count >= maxPending {
            let error = RedisError.overloaded("\(pending.count) command batches already wait for replies on this connection")
            request.promise?.fail(error)
            promise?.fail(error)
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
                let due = timeout.map { NIODeadline.now() + $0 + request.allowance } ?? .distantFuture
                pending.append(Pending(count: request.commands.count, promise: replyPromise, due: due))
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
