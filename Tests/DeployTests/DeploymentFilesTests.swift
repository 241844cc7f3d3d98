import Contracts
import Foundation
import Testing
import Yams

/// The compose file and the rendered Kubernetes overlays cover every service on main, the way an operator
/// relies on: a service added under `Services/` and forgotten in `compose/` or `k8s/` fails here.
@Suite struct DeploymentFilesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Every service on main: a folder under Services/ (OrderGrab → order-grab), and whether it keeps a
    /// SQLite file of its own (then it needs a volume and exactly one writer).
    static func services() throws -> [(name: String, ownsSQLite: Bool)] {
        let folder = root.appendingPathComponent("Services")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        return try names.map { folderName in
            var kebab = ""
            for character in folderName {
                if character.isUppercase, !kebab.isEmpty { kebab += "-" }
                kebab += character.lowercased()
            }
            let build = try String(contentsOf: folder.appendingPathComponent(folderName).appendingPathComponent("App+build.swift"), encoding: .utf8)
            return (kebab, build.contains("openDatabase(") || build.contains("SQLiteStore.open("))
        }
    }

    @Test func servicesAreFound() throws {
        let services = try Self.services()
        #expect(services.count >= 8)
        #expect(services.contains { $0.name == "order-grab" && $0.ownsSQLite })
        #expect(services.contains { $0.name == "gateway" && !$0.ownsSQLite })
    }

    /// The shards override adds a split service's instances written out whole (compose cannot extend a
    /// service with dependencies): each must run as the base file's instance of its service does, on the
    /// cluster, with its own shard and volume; every service must be told the split.
    @Test func composeShardsAgreeWithTheBase() throws {
        func services(_ file: String) throws -> [String: [String: Any]] {
            let text = try String(contentsOf: Self.root.appendingPathComponent("compose/\(file)"), encoding: .utf8)
            let loaded = try #require(try Yams.load(yaml: text) as? [String: Any])
            return try #require(loaded["services"] as? [String: [String: Any]])
        }
        func environment(_ entry: [String: Any]?) -> [String: String] {
            ((entry?["environment"] as? [String: Any]) ?? [:]).mapValues { "\($0)" }
        }
        let base = try services("docker-compose.yml")
        let cluster = try services("docker-compose.redis-cluster.yml")
        let shards = try services("docker-compose.shards.yml")
        for service in try Self.services() {
            #expect(environment(shards[service.name])["SHARDS"] != nil, "\(service.name) is not told the split")
        }
        let map = try ShardMap(parsing: try #require(environment(shards["gateway"])["SHARDS"]))
        // Matching by city: the gateway and every instance of matching read the same cities, one per instance.
        let cities = environment(shards["gateway"])["MATCHING_CITIES"]
        #expect(try CityCircles(specification: cities ?? "").all.count == map.count(of: "matching"), "\(cities ?? "no MATCHING_CITIES")")
        #expect(environment(shards["matching"])["MATCHING_CITIES"] == cities, "matching reads other cities than the gateway")
        #expect(map.count(of: "order") == 3 && map.count(of: "coupon") == 2 && map.count(of: "payment") == 2 && map.count(of: "ad") == 2 && map.count(of: "matching") == 2, "\(map)")
        for (service, count) in map.counts {
            #expect(environment(shards[service])["SHARD"] == "0", "\(service): the base file's instance owns shard 0")
            for shard in 1..<count {
                let name = "\(service)-\(shard)"
                let entry = try #require(shards[name], "compose/docker-compose.shards.yml has no \(name)")
                // The base file's environment, the cluster's and the split's, and its own shard.
                var expected = environment(base[service])
                    .merging(environment(cluster[service])) { $1 }.merging(environment(shards[service])) { $1 }
                expected["SHARD"] = String(shard)
                #expect(environment(entry) == expected, "\(name) does not run as \(service) does")
                #expect((entry["image"] as? String) == (base[service]?["image"] as? String), "\(name): another image")
                #expect((entry["volumes"] as? [String]) == ["\(name)-data:/data"], "\(name) has no volume of its own")
                let dependencies = entry["depends_on"] as? [String: Any] ?? [:]
                #expect(dependencies["redis-cluster"] != nil && dependencies["etcd"] != nil, "\(name) does not wait for the cluster and etcd")
                #expect(entry["healthcheck"] != nil && entry["restart"] != nil, "\(name): no health check or restart policy")
            }
        }
    }

    @Test func composeRunsEveryService() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("compose/docker-compose.yml"), encoding: .utf8)
        let compose = try #require(try Yams.load(yaml: text) as? [String: Any])
        let composed = try #require(compose["services"] as? [String: Any])
        let volumes = compose["volumes"] as? [String: Any] ?? [:]
        for backend in ["redis", "etcd"] {
            #expect(composed[backend] != nil, "compose has no \(backend)")
        }
        for service in try Self.services() {
            guard let entry = composed[service.name] as? [String: Any] else {
                Issue.record("compose/docker-compose.yml has no service \(service.name)")
                continue
            }
            let build = entry["build"] as? [String: Any]
            let arguments = build?["args"] as? [String: Any]
            #expect(arguments?["SERVICE"] as? String == service.name, "\(service.name): image built for another service")
            let health = entry["healthcheck"] as? [String: Any]
            #expect((health?["test"] as? [String])?.contains("/usr/local/bin/hailstorm-healthcheck") == true, "\(service.name): no health check")
            #expect(entry["restart"] as? String != nil, "\(service.name): no restart policy")
            let dependencies = entry["depends_on"] as? [String: Any] ?? [:]
            for backend in ["redis", "etcd"] {
                let condition = (dependencies[backend] as? [String: Any])?["condition"] as? String
                #expect(condition == "service_healthy", "\(service.name) does not wait for a healthy \(backend)")
            }
            if service.ownsSQLite {
                let mounts = entry["volumes"] as? [String] ?? []
                #expect(mounts.contains("\(service.name)-data:/data"), "\(service.name) keeps SQLite but has no volume of its own")
                #expect(volumes.keys.contains("\(service.name)-data"))
            }
        }
        let gatewayPorts = (composed["gateway"] as? [String: Any])?["ports"] as? [String] ?? []
        #expect(gatewayPorts.contains { $0.hasPrefix("127.0.0.1:") && $0.hasSuffix(":8080") }, "the gateway is not published")
        // Nothing else is reachable from outside the compose network but Prometheus's UI, and nothing is
        // published beyond loopback.
        for (name, definition) in composed where name != "gateway" && name != "prometheus" {
            #expect((definition as? [String: Any])?["ports"] == nil, "\(name) publishes a port")
        }
        let prometheusPorts = (composed["prometheus"] as? [String: Any])?["ports"] as? [String] ?? []
        #expect(!prometheusPorts.isEmpty && prometheusPorts.allSatisfy { $0.hasPrefix("127.0.0.1:") }, "Prometheus: \(prometheusPorts)")
        // Redis and etcd require credentials; every service brings them.
        let environment = (composed["order"] as? [String: Any])?["environment"] as? [String: Any] ?? [:]
        for key in ["REDIS_PASSWORD", "DISCOVERY_ETCD_USER", "DISCOVERY_ETCD_PASSWORD", "AUTH_JWKS", "AUTH_SIGNING_KEY"] {
            #expect(environment[key] != nil, "order has no \(key)")
        }
    }

    @Test func composeOnARedisCluster() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("compose/docker-compose.redis-cluster.yml"), encoding: .utf8)
        let override = try #require(try Yams.load(yaml: text) as? [String: Any])
        let composed = try #require(override["services"] as? [String: Any])
        let nodes = ["redis"] + (2...6).map { "redis-\($0)" }
        for node in nodes {
            let command = (composed[node] as? [String: Any])?["command"] as? [String] ?? []
            #expect(command.contains("--cluster-enabled"), "\(node) is not a cluster node: \(command)")
            #expect((composed[node] as? [String: Any])?["ports"] == nil, "\(node) publishes a port")
        }
        let initializer = try #require(composed["redis-cluster"] as? [String: Any])
        #expect(initializer["command"] as? [String] == ["redis-cluster-init"])
        let waitsFor = (initializer["depends_on"] as? [String: Any] ?? [:]).keys
        #expect(Set(waitsFor) == Set(nodes), "the cluster is formed once every node is up: \(waitsFor)")
        for service in try Self.services() {
            let entry = composed[service.name] as? [String: Any] ?? [:]
            let environment = entry["environment"] as? [String: Any] ?? [:]
            #expect(environment["REDIS_CLUSTER"] as? String == "true", "\(service.name) is not a cluster client")
            let seeds = (environment["REDIS_CLUSTER_NODES"] as? String ?? "").split(separator: ",")
            #expect(seeds.count == 5, "\(service.name) knows \(seeds.count) other nodes")
            let after = ((entry["depends_on"] as? [String: Any])?["redis-cluster"] as? [String: Any])?["condition"] as? String
            #expect(after == "service_completed_successfully", "\(service.name) starts before the cluster is formed")
        }
        let coupon = (composed["coupon"] as? [String: Any])?["environment"] as? [String: Any]
        #expect(coupon?["COUPON_REDIS_WAIT_REPLICAS"] as? String == "1")
    }

    /// Compose's Prometheus finds every service (and etcd) by name and evaluates the rules the local run uses.
    @Test func composePrometheusScrapesEveryService() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("compose/prometheus.yml"), encoding: .utf8)
        let config = try #require(try Yams.load(yaml: text) as? [String: Any])
        let scrapes = config["scrape_configs"] as? [[String: Any]] ?? []
        let names = Set(scrapes.flatMap { ($0["dns_sd_configs"] as? [[String: Any]] ?? []).flatMap { $0["names"] as? [String] ?? [] } })
        for service in try Self.services() {
            #expect(names.contains(service.name), "compose/prometheus.yml does not scrape \(service.name)")
        }
        #expect(names.contains("etcd"))
        #expect(config["rule_files"] as? [String] == ["/etc/hailstorm/hailstorm-rules.yml"])
        let dockerfile = try String(contentsOf: Self.root.appendingPathComponent("compose/backends.Dockerfile"), encoding: .utf8)
        #expect(dockerfile.contains("COPY k8s/components/prometheus/hailstorm-rules.yml /etc/hailstorm/hailstorm-rules.yml"))
    }

    /// A value of the rendered `hailstorm-config` ConfigMap.
    static func setting(_ key: String, in objects: [[String: Any]]) -> String? {
        let settings = objects.first {
            $0["kind"] as? String == "ConfigMap" && (($0["metadata"] as? [String: Any])?["name"] as? String)?.hasPrefix("hailstorm-config") == true
        }
        return (settings?["data"] as? [String: Any])?[key] as? String
    }

    @Test(arguments: ["dev", "prod"])
    func kubernetesRunsEveryService(overlay: String) throws {
        let objects = try Self.render(overlay: overlay)
        func object(_ kind: String, _ name: String) -> [String: Any]? {
            objects.first { $0["kind"] as? String == kind && ($0["metadata"] as? [String: Any])?["name"] as? String == name }
        }
        for service in try Self.services() {
            let workload = object("StatefulSet", service.name) ?? object("Deployment", service.name)
            guard let workload else {
                Issue.record("\(overlay): no Deployment or StatefulSet for \(service.name)")
                continue
            }
            let kind = workload["kind"] as? String
            if service.ownsSQLite {
                #expect(kind == "StatefulSet", "\(overlay): \(service.name) keeps SQLite, so it must be a StatefulSet with one writer")
                let spec = workload["spec"] as? [String: Any]
                // One writer per volume: one pod, or one pod per shard when the service is split, each told
                // its shard by its ordinal and found by its stable name.
                let shards = try ShardMap(parsing: Self.setting("SHARDS", in: objects) ?? "").count(of: service.name)
                #expect(spec?["replicas"] as? Int == shards, "\(overlay): \(service.name) must have one replica per volume and shard")
                if shards > 1 {
                    let pods = (0..<shards).map { "\(service.name)#\($0)=\(service.name)-\($0).\(service.name):8080" }
                    let listed = Set((Self.setting("DISCOVERY_STATIC", in: objects) ?? "").split(separator: ",").map(String.init))
                    #expect(Set(pods).isSubset(of: listed), "\(overlay): \(service.name)'s shards are not all named in DISCOVERY_STATIC: \(listed)")
                    let container = (((spec?["template"] as? [String: Any])?["spec"] as? [String: Any])?["containers"] as? [[String: Any]])?.first
                    let shardSource = (container?["env"] as? [[String: Any]])?.first { $0["name"] as? String == "SHARD" }
                    let field = ((shardSource?["valueFrom"] as? [String: Any])?["fieldRef"] as? [String: Any])?["fieldPath"] as? String
                    #expect(field == "metadata.labels['apps.kubernetes.io/pod-index']", "\(overlay): \(service.name)'s pods do not take their shard from their ordinal")
                    if service.name == "matching" {
                        // A city per pod, in the list matching and the gateway both read.
                        let cities = try CityCircles(specification: Self.setting("MATCHING_CITIES", in: objects) ?? "")
                        #expect(cities.all.count == shards, "\(overlay): MATCHING_CITIES must name a city for each of matching's \(shards) pods")
                    }
                }
                #expect((spec?["volumeClaimTemplates"] as? [Any])?.isEmpty == false, "\(overlay): \(service.name) has no volume claim")
            } else {
                #expect(kind == "Deployment", "\(overlay): \(service.name) is stateless and should be a Deployment")
                let scaler = objects.first {
                    $0["kind"] as? String == "HorizontalPodAutoscaler"
                        && (($0["spec"] as? [String: Any])?["scaleTargetRef"] as? [String: Any])?["name"] as? String == service.name
                }
                #expect(scaler != nil, "\(overlay): \(service.name) has no HorizontalPodAutoscaler")
            }
            #expect(object("Service", service.name) != nil, "\(overlay): no Service named \(service.name), so nobody can reach it by DNS")
            #expect(object("PodDisruptionBudget", service.name) != nil, "\(overlay): \(service.name) has no PodDisruptionBudget")
        }
        #expect(object("CronJob", "settlement-run") != nil, "\(overlay): no CronJob for settlement")
        #expect(object("Ingress", "gateway") != nil, "\(overlay): no Ingress for the gateway")
        // The Ingress routes the API, the push socket and the command centre's page only: /metrics, /healthz and
        // /readyz stay inside.
        let rules = ((object("Ingress", "gateway")?["spec"] as? [String: Any])?["rules"] as? [[String: Any]]) ?? []
        let paths = rules.flatMap { (($0["http"] as? [String: Any])?["paths"] as? [[String: Any]]) ?? [] }.compactMap { $0["path"] as? String }
        #expect(Set(paths) == ["/api/", "/ws", "/command"], "\(overlay): the Ingress routes \(paths)")
        #expect(object("NetworkPolicy", "default-deny") != nil, "\(overlay): no default-deny NetworkPolicy")

        // Prometheus (the component): it runs, the command centre reads it, and it finds every service's pods by DNS.
        #expect(object("StatefulSet", "prometheus") != nil, "\(overlay): no Prometheus")
        #expect(object("Service", "gateway-pods") != nil, "\(overlay): the gateway's replicas cannot be found one by one")
        let settings = objects.first {
            $0["kind"] as? String == "ConfigMap" && (($0["metadata"] as? [String: Any])?["name"] as? String)?.hasPrefix("hailstorm-config") == true
        }
        #expect((settings?["data"] as? [String: Any])?["COMMAND_PROMETHEUS_URL"] as? String == "http://prometheus:9090")
        let scrapeText = try String(contentsOf: Self.root.appendingPathComponent("k8s/components/prometheus/prometheus-k8s.yml"), encoding: .utf8)
        let scrapes = ((try Yams.load(yaml: scrapeText) as? [String: Any])?["scrape_configs"] as? [[String: Any]]) ?? []
        let names = Set(scrapes.flatMap { ($0["dns_sd_configs"] as? [[String: Any]] ?? []).flatMap { $0["names"] as? [String] ?? [] } })
        for service in try Self.services() {
            let name = service.ownsSQLite ? service.name : service.name + "-pods"
            #expect(names.contains(name), "\(overlay): Prometheus does not look up \(name)")
            #expect(object("Service", name).flatMap { ($0["spec"] as? [String: Any])?["clusterIP"] as? String } == "None",
                "\(overlay): \(name) must be headless for Prometheus to find each pod")
        }

        // Every container of every Deployment and StatefulSet: probes, resources, non-root, read-only root.
        for workload in objects where ["Deployment", "StatefulSet"].contains(workload["kind"] as? String) {
            let name = (workload["metadata"] as? [String: Any])?["name"] as? String ?? "?"
            let pod = ((workload["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any]
            let podSecurity = pod?["securityContext"] as? [String: Any]
            #expect(podSecurity?["runAsNonRoot"] as? Bool == true, "\(overlay): \(name) may run as root")
            for container in pod?["containers"] as? [[String: Any]] ?? [] {
                #expect(container["livenessProbe"] != nil, "\(overlay): \(name) has no liveness probe")
                #expect(container["readinessProbe"] != nil, "\(overlay): \(name) has no readiness probe")
                let resources = container["resources"] as? [String: Any]
                for part in ["requests", "limits"] {
                    let values = resources?[part] as? [String: Any]
                    #expect(values?["cpu"] != nil && values?["memory"] != nil, "\(overlay): \(name) has no \(part) for cpu and memory")
                }
                let security = container["securityContext"] as? [String: Any]
                #expect(security?["readOnlyRootFilesystem"] as? Bool == true, "\(overlay): \(name) has a writable root filesystem")
                // Secrets come as files (SECRETS_DIR), never through the environment, where any child
                // process and every crash dump would see them.
                let environment = container["env"] as? [[String: Any]] ?? []
                let fromSecrets = environment.filter { (($0["valueFrom"] as? [String: Any])?["secretKeyRef"]) != nil }
                #expect(fromSecrets.isEmpty, "\(overlay): \(name) takes a secret through its environment")
            }
        }
    }

    /// `kubectl kustomize k8s/overlays/NAME`, as a list of objects.
    static func render(overlay: String) throws -> [[String: Any]] {
        let overlayFolder = root.appendingPathComponent("k8s/overlays/\(overlay)")
        // The dev overlay generates its Secret from secrets.env and its JWKS from jwks.json, never committed.
        let secrets = overlayFolder.appendingPathComponent("secrets.env")
        if overlay == "dev", !FileManager.default.fileExists(atPath: secrets.path) {
            let random = { (count: Int) in (0..<count).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined() }
            let keys = ["login", "order", "matching", "order-grab", "coupon", "payment", "settlement", "ad", "analytics", "command", "gateway"]
                .map { "\($0)-signing-key=placeholder\n" }.joined() + "ad-token-key=placeholder-placeholder-placeholder-0\n"
            try "# placeholder keys\nadmin-password=\(random(12))\nredis-password=\(random(24))\n\(keys)"
                .write(to: secrets, atomically: true, encoding: .utf8)
        }
        let jwks = overlayFolder.appendingPathComponent("jwks.json")
        if overlay == "dev", !FileManager.default.fileExists(atPath: jwks.path) {
            try #"{"keys":[]}"#.write(to: jwks, atomically: true, encoding: .utf8)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["kubectl", "kustomize", overlayFolder.path]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let rendered = output.fileHandleForReading.readDataToEndOfFile()
        let problem = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "kubectl kustomize \(overlay): \(String(decoding: problem, as: UTF8.self))")
        var documents = try Yams.load_all(yaml: String(decoding: rendered, as: UTF8.self))
        var objects: [[String: Any]] = []
        while let document = documents.next() {
            if let object = document as? [String: Any] { objects.append(object) }
        }
        if let error = documents.error { throw error }
        return objects
    }
}
