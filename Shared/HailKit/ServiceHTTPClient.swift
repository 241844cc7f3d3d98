import AsyncHTTPClient
import NIOCore
import NIOPosix

/// The HTTP client services call each other with: one per process, like `HTTPClient.shared`, but set up
/// for calls inside the platform rather than for the web.
///
/// `HTTPClient.shared` behaves like a browser: it follows redirects, negotiates compressed bodies and
/// opens a tracing span per request (parsing the URL again to name it). None of that is wanted between
/// services — Hailstorm forwards `traceparent` itself, answers are small and uncompressed, a redirect
/// between services is a bug — and each costs time on every call. Connections per instance go up from 8
/// to 64: the gateway relays a flash sale's burst to one coupon instance, and requests beyond the pool's
/// connections wait inside the client.
///
/// It lives as long as the process, so it is never shut down and a kit built but never run leaks nothing.
public enum ServiceHTTPClient {
    public static let shared: HTTPClient = {
        var pool = HTTPClient.Configuration.ConnectionPool()
        pool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        // Shorter than the servers' idle timeout (`http.idle.timeout.seconds`, 15 s): the client lets a connection
        // go before the server closes it, so no call is sent on a connection the server is closing.
        pool.idleTimeout = .seconds(10)
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(2)),
            connectionPool: pool,
            decompression: .disabled)
        configuration.httpVersion = .http1Only
        configuration.tracing.tracer = nil
        return HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: configuration)
    }()
}
