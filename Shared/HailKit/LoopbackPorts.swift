import Foundation
import Synchronization

/// Ports on 127.0.0.1 for the processes a local run or a test starts.
public enum LoopbackPorts {
    /// A TCP port on 127.0.0.1 that nothing listens on, chosen outside the kernel's ephemeral range
    /// (`net.ipv4.ip_local_port_range`): a port inside it can be taken by any outgoing connection between
    /// this choice and the moment a server binds it, one outside it only by another listener. Falls back
    /// to the kernel's choice for port 0 when nothing outside the range is free. Nil when neither works.
    ///
    /// A port is handed out once per process: a local run or a test chooses the ports of several
    /// processes before any of them binds its own, and two of them given the same free port would leave
    /// one unable to start and the other answering for it.
    public static func free() -> Int? {
        let (low, high) = ephemeralRange()
        // Below the range if there is room (the usual 32768–60999 leaves 10000–32767), else above it.
        let candidates: ClosedRange<Int>? =
            low > 11_000 ? 10_000...(low - 1) : (high < 64_535 ? (high + 1)...65_535 : nil)
        if let candidates {
            for _ in 0..<200 {
                let port = Int.random(in: candidates)
                if bindable(port), handOut(port) { return port }
            }
        }
        for _ in 0..<200 {
            guard let port = bindable(0, reportBound: true) else { return nil }
            if handOut(port) { return port }
        }
        return nil
    }

    private static let handedOut = Mutex<Set<Int>>([])

    /// Whether `port` was not handed out before (it is from now on).
    private static func handOut(_ port: Int) -> Bool {
        handedOut.withLock { $0.insert(port).inserted }
    }

    /// The kernel's range for outgoing connections' local ports (Linux's default when unreadable).
    public static func ephemeralRange() -> (low: Int, high: Int) {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8) else {
            return (32_768, 60_999)
        }
        let numbers = text.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        guard numbers.count == 2, numbers[0] <= numbers[1] else { return (32_768, 60_999) }
        return (numbers[0], numbers[1])
    }

    /// Whether `port` can be bound on 127.0.0.1 right now.
    private static func bindable(_ port: Int) -> Bool {
        bindable(port, reportBound: false) != nil
    }

    private static func bindable(_ port: Int, reportBound: Bool) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { return nil }
        guard reportBound else { return port }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts connections on `port`.
    public static func isListening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}
