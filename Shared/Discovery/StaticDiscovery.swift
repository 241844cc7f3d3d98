import Foundation

/// Discovery where a service's name is a host name, as under compose and Kubernetes Services: the
/// platform's DNS and load balancer keep the list, so registering is a no-op.
public struct StaticDiscovery: ServiceDiscovery {
    /// Known addresses per service (with the shard each owns, for a split service); a service missing
    /// here resolves to `<name>:<defaultPort>`.
    public var addresses: [String: [(host: String, port: Int, shard: Int?)]]
    public var defaultPort: Int

    public init(addresses: [String: [(host: String, port: Int, shard: Int?)]] = [:], defaultPort: Int = 8080) {
        self.addresses = addresses
        self.defaultPort = defaultPort
    }

    /// Parses `login=127.0.0.1:9001,gateway=gw:8080` (a service may appear more than once). A shard of a
    /// split service is `name#k=host:port`: `order#1=order-1.order-shards:8080` is the instance owning
    /// order's shard 1 (a StatefulSet's pod by its stable name).
    public init(parsing spec: String, defaultPort: Int = 8080) {
        var addresses: [String: [(host: String, port: Int, shard: Int?)]] = [:]
        for item in spec.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let target = parts[1].split(separator: ":")
            let host = target[0].trimmingCharacters(in: .whitespaces)
            let port = target.count > 1 ? Int(target[1]) ?? defaultPort : defaultPort
            let name = parts[0].split(separator: "#", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let shard = name.count == 2 ? Int(name[1]) : nil
            addresses[name[0], default: []].append((host, port, shard))
        }
        self.init(addresses: addresses, defaultPort: defaultPort)
    }

    public func instances(of service: String) async throws -> [ServiceInstance] {
        listed(service)
    }

    private func listed(_ service: String) -> [ServiceInstance] {
        (addresses[service] ?? [(service, defaultPort, nil)]).map {
            ServiceInstance(id: "\(service)@\($0.host):\($0.port)", service: service, host: $0.host, port: $0.port, shard: $0.shard)
        }
    }

    public func register(_ instance: ServiceInstance) async throws -> any ServiceRegistration {
        StaticRegistration(instance: instance)
    }

    public func watch(service: String?) -> AsyncThrowingStream<DiscoveryChange, any Error> {
        let current = service.map(listed) ?? []
        return AsyncThrowingStream { continuation in
            for instance in current { continuation.yield(.added(instance)) }
        }
    }

    public func ping() async throws {}
}

struct StaticRegistration: ServiceRegistration {
    let instance: ServiceInstance

    func keepAlive() async throws {
        // Nothing to renew: wait until cancelled.
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(3600))
        }
    }

    func deregister() async throws {}
}
