import Foundation
import HailKitTesting
import RedisKit
import Testing

/// A Redis that stops answering (frozen with SIGSTOP: connections open, no replies) must not hold its
/// callers: a command ends at the command timeout or when its task is cancelled, and the queue of
/// commands waiting for replies is bounded.
@Suite("RedisKit against a Redis that hangs")
struct RedisHangTests {
    @Test("a command to a hung Redis fails at the command timeout, and the client recovers when Redis answers again")
    func commandTimeout() async throws {
        let server = try RedisServerProcess()
        defer { server.kill() }
        let client = RedisClient(configuration: .init(port: server.port, poolSize: 1, commandTimeout: .milliseconds(400)))
        try await client.send("SET", "hang:k", "v")
        server.hang()
        let clock = ContinuousClock()
        let started = clock.now
        do {
            try await client.send("GET", "hang:k")
            Issue.record("a hung Redis answered")
        } catch let error as RedisError {
            #expect(error.isTimeout, "\(error)")
        }
        #expect(clock.now - started < .seconds(3), "the caller waited \(clock.now - started) for a hung Redis")
        server.resume()
        // A Redis just woken from SIGSTOP on a busy machine may itself take longer than the 400 ms
        // timeout for its first reply; what counts is that the client gets an answer again without
        // the caller doing anything, within a few seconds.
        var answer: String?
        var lastError: (any Error)?
        let recoveryStarted = clock.now
        while answer == nil, clock.now - recoveryStarted < .seconds(10) {
            do {
                answer = try await client.send("GET", "hang:k").string
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(answer == "v", "no answer within 10 s of Redis waking up; last error: \(String(describing: lastError))")
        await client.shutdown()
    }

    @Test("a cancelled task stops waiting for a hung Redis at once, even with no command timeout")
    func cancellation() async throws {
        let server = try RedisServerProcess()
        defer { server.kill() }
        let client = RedisClient(configuration: .init(port: server.port, poolSize: 1, commandTimeout: nil))
        try await client.send("PING")
        server.hang()
        let waiting = Task { try await client.send("PING") }
        try await Task.sleep(for: .milliseconds(200))
        waiting.cancel()
        let outcome = await withTaskGroup(of: String.self) { group in
            group.addTask {
                do {
                    _ = try await waiting.value
                    return "answered"
                } catch is CancellationError {
                    return "cancelled"
                } catch {
                    return "failed: \(error)"
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(5))
                return "still waiting after 5 s"
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        #expect(outcome == "cancelled")
        server.resume()
        #expect(try await client.send("PING").string == "PONG", "the late reply is read in its turn; the connection stays in step")
        await client.shutdown()
    }

    @Test("past the bound of commands waiting on a connection, more are refused at once and never sent")
    func boundedPending() async throws {
        let server = try RedisServerProcess()
        defer { server.kill() }
        let client = RedisClient(configuration: .init(port: server.port, poolSize: 1, commandTimeout: nil, maxPending: 2))
        try await client.send("DEL", "hang:counter")
        server.hang()
        let waiting = (0..<2).map { _ in Task { try await client.send("INCR", "hang:counter") } }
        try await Task.sleep(for: .milliseconds(200))
        do {
            try await client.send("INCR", "hang:counter")
            Issue.record("a third command was accepted past the bound")
        } catch let error as RedisError {
            #expect(error.commandNotSent, "\(error)")
        }
        server.resume()
        for task in waiting { _ = try await task.value }
        #expect(try await client.send("GET", "hang:counter").string == "2", "the refused command never ran")
        await client.shutdown()
    }
}
