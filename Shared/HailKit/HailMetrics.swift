import Metrics
import NIOConcurrencyHelpers
import Prometheus

/// The process's Prometheus registry, installed as the swift-metrics backend once per process.
///
/// Hummingbird's `MetricsMiddleware` reports requests, errors and a latency histogram per route into
/// it; services add their own domain counters through swift-metrics; `/metrics` renders it.
public enum HailMetrics {
    private static let state = NIOLockedValueBox<PrometheusCollectorRegistry?>(nil)

    /// The registry, bootstrapping swift-metrics with it on first use.
    public static var registry: PrometheusCollectorRegistry {
        state.withLockedValue { current in
            if let current { return current }
            let registry = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = [
                .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                .milliseconds(2500), .seconds(5), .seconds(10),
            ]
            MetricsSystem.bootstrap(factory)
            current = registry
            return registry
        }
    }

    /// The Prometheus text exposition of every metric.
    public static func render() -> [UInt8] {
        registry.emitToBuffer()
    }
}
