import Foundation
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP connection to a test server for bytes no HTTP client would send (half a header, a TLS
/// ClientHello, a bare line feed). Its blocking socket calls run on NIO's thread pool, never on the
/// cooperative threads the server under test needs.
public final class RawConnection: @unchecked Sendable {
    // Safe: `descriptor` is set once in init and only read after; the socket calls on it are the
    // kernel's to serialise.
    private let descriptor: Int32

    /// Connects to `127.0.0.1:port`.
    public init(port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestProcessError("socket() failed: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw TestProcessError("connect to port \(port) failed: errno \(errno)")
        }
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Sends all of `bytes`; false when the peer has closed the connection.
    @discardableResult
    public func send(_ bytes: [UInt8]) async throws -> Bool {
        let fd = descriptor
        return try await NIOThreadPool.singleton.runIfActive {
            var sent = 0
            while sent < bytes.count {
                let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return false }
                sent += n
            }
            return true
        }
    }

    @discardableResult
    public func send(_ text: String) async throws -> Bool {
        try await send(Array(text.utf8))
    }

    /// Reads until the peer closes the connection or `timeout` passes. `closed` tells which.
    public func readUntilClosed(timeout: Duration) async throws -> (bytes: [UInt8], closed: Bool) {
        let fd = descriptor
        let deadline = ContinuousClock.now + timeout
        return try await NIOThreadPool.singleton.runIfActive {
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let left = deadline - .now
                if left <= .zero { return (received, false) }
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, Int32(max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)))
                if ready == 0 { continue }
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return (received, true) }
                received.append(contentsOf: buffer[0..<n])
            }
        }
    }
}
