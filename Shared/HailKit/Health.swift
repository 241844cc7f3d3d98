import Foundation
import Hummingbird
import NIOCore

/// A dependency a service needs to do its job; `/readyz` fails while any check fails.
public struct ReadinessCheck: Sendable {
    public let name: String
    public let check: @Sendable () async throws -> Void

    public init(_ name: String, _ check: @escaping @Sendable () async throws -> Void) {
        self.name = name
        self.check = check
    }
}

/// `/healthz` answers while the process can answer (liveness: restart me if not);
/// `/readyz` answers 200 only while every dependency answers (readiness: send me traffic or not).
struct HealthController: Sendable {
    let service: String
    let instance: String
    let checks: [ReadinessCheck]
    let timeout: Duration

    func register(on router: Router<HailRequestContext>) {
        router.get("/healthz") { _, _ in
            try JSONBody.response(["status": "alive", "service": service, "instance": instance])
        }
        router.get("/readyz") { _, _ in
            let results = await run()
            let failed = results.filter { $0.value != nil }
            if failed.isEmpty {
                return try JSONBody.response(["status": "ready", "service": service])
            }
            let detail = failed.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value!)" }.joined(separator: "; ")
            throw Problem.unavailable("Not ready: \(detail)", retryAfterSeconds: 1)
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: HailMetrics.render())))
        }
    }

    /// Runs every check at once, each bounded by `timeout`; nil means it passed.
    func run() async -> [String: String?] {
        await withTaskGroup(of: (String, String?).self) { group in
            for check in checks {
                group.addTask {
                    do {
                        try await withTimeout(timeout) { try await check.check() }
                        return (check.name, nil)
                    } catch {
                        return (check.name, "\(error)")
                    }
                }
            }
            var results: [String: String?] = [:]
            for await (name, failure) in group { results[name] = failure }
            return results
        }
    }
}

struct TimeoutError: Error, CustomStringConvertible {
    let timeout: Duration
    var description: String { "no answer within \(timeout)" }
}

/// Runs `body`, cancelling it and throwing `TimeoutError` when it takes longer than `timeout`.
func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TimeoutError(timeout: timeout) }
        return value
    }
}
