import Foundation
import HailKit
import Logging
import Synchronization

/// Reads the alerts Prometheus has firing, every `interval`, into the alerts book: an alert is opened
/// when the command centre first sees it firing and resolved when it first sees it gone.
final class AlertWatch: Sendable {
    let store: CommandStore
    let prometheus: PrometheusReader?
    private let checked = Mutex<Double?>(nil)

    init(store: CommandStore, prometheus: PrometheusReader?) {
        self.store = store
        self.prometheus = prometheus
    }

    /// When Prometheus's alerts were last read; nil when they never were.
    var checkedAt: Double? { checked.withLock { $0 } }

    /// One reading: what fired and what resolved since the last one.
    @discardableResult
    func check(now: Double = Date().timeIntervalSince1970, logger: Logger) async throws -> CommandStore.Transitions {
        guard let prometheus else { return .init() }
        let firing = try await prometheus.firingAlerts()
        let transitions = try await store.observe(firing, source: "prometheus", now: now)
        checked.withLock { $0 = now }
        transitions.log(source: "prometheus", to: logger)
        return transitions
    }

    func periodic(every interval: Duration, logger: Logger) -> PeriodicWork {
        PeriodicWork("alert-watch", every: interval, maxBackoff: .seconds(10), logger: logger) {
            try await self.check(logger: logger)
        }
    }
}
