import Foundation
import Logging
import ServiceLifecycle

/// Runs a settlement batch every `interval`, besides the runs asked for through the API or the
/// `run` command.
struct BatchScheduler: Service {
    let store: SettlementStore
    let interval: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully {
            // Woken by graceful shutdown too: a SIGTERM must not wait out the rest of the interval.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            guard !Task.isShuttingDownGracefully else { return }
            do {
                let batch = try await store.runBatch(trigger: "schedule", now: Date().timeIntervalSince1970)
                logger.info("scheduled batch", metadata: ["batch": "\(batch.id)", "entries": "\(batch.entries)", "cents": "\(batch.totalCents)"])
            } catch {
                logger.error("scheduled batch failed; the entries wait for the next", metadata: ["error": "\(error)"])
            }
        }
    }
}
