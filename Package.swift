// swift-tools-version: 6.2
import PackageDescription

// Products used by several targets.
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let httpClient = Target.Dependency.product(name: "AsyncHTTPClient", package: "async-http-client")
let configuration = Target.Dependency.product(name: "Configuration", package: "swift-configuration")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let jwtKit = Target.Dependency.product(name: "JWTKit", package: "jwt-kit")

/// Third-party products every service links.
let serviceBase: [Target.Dependency] = [
    "HailKit", "Contracts", "Discovery", "RedisKit", "SQLiteKit", "EventBus",
    hummingbird,
    configuration,
    logging,
    lifecycle,
]

/// One service: an executable `hailstorm-<name>` built from `Services/<Folder>`.
/// Adding a service to Hailstorm is one call of this helper in `services` below.
func service(_ folder: String, product: String, _ extra: [Target.Dependency] = [], resources: [Resource]? = nil) -> (Product, Target) {
    (
        .executable(name: "hailstorm-\(product)", targets: [folder]),
        .executableTarget(name: folder, dependencies: serviceBase + extra, path: "Services/\(folder)", resources: resources)
    )
}

let services = [
    service("Login", product: "login", [
        jwtKit,
        .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
        .product(name: "Crypto", package: "swift-crypto"),
    ]),
    service("Gateway", product: "gateway", [
        jwtKit,
        .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
        .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Metrics", package: "swift-metrics"),
    ]),
    service("Coupon", product: "coupon", [.product(name: "Metrics", package: "swift-metrics")]),
    service("Order", product: "order"),
    service("Matching", product: "matching", ["MatchingEngine", .product(name: "Metrics", package: "swift-metrics")]),
    service("OrderGrab", product: "order-grab"),
    service("Payment", product: "payment", [.product(name: "Metrics", package: "swift-metrics")]),
    service("Settlement", product: "settlement", [.product(name: "Metrics", package: "swift-metrics")]),
    service("Ad", product: "ad", [.product(name: "Crypto", package: "swift-crypto")]),
    service("Analytics", product: "analytics", ["MatchingEngine", .product(name: "Metrics", package: "swift-metrics")]),
    // The command centre's page, compiled into the binary: nothing to copy beside it in an image.
    service("Command", product: "command", [httpClient], resources: [
        .embedInCode("Page/index.html"), .embedInCode("Page/app.js"), .embedInCode("Page/app.css"),
    ]),
]

/// The tests of a module: `Tests/<Module>Tests`.
func testTarget(_ module: String, _ dependencies: [Target.Dependency]) -> Target {
    .testTarget(name: "\(module)Tests", dependencies: dependencies, path: "Tests/\(module)Tests")
}

let package = Package(
    name: "Hailstorm",
    platforms: [.macOS(.v15)],
    products: services.map(\.0) + [
        .executable(name: "hailstorm-redis-bench", targets: ["RedisBench"]),
        .executable(name: "matching-bench", targets: ["MatchingBench"]),
        .executable(name: "hailstorm-coupon-bench", targets: ["CouponBench"]),
        .executable(name: "hailstorm", targets: ["Runner"]),
        .executable(name: "hailstorm-load", targets: ["Load"]),
        .executable(name: "hailstorm-bare-endpoint", targets: ["BareEndpoint"]),
        .library(name: "MatchingEngine", targets: ["MatchingEngine"]),
        .library(name: "HailKit", targets: ["HailKit"]),
        .library(name: "HailKitTesting", targets: ["HailKitTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: ["JSON", "CommandLineArguments"]),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.100.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.34.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.1.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.0"),
    ],
    targets: services.map(\.1) + [
        .systemLibrary(
            name: "CHiredis",
            path: "Shared/CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .target(
            name: "RedisKit",
            dependencies: [
                "CHiredis",
                nioCore,
                nioPosix,
                logging,
            ],
            path: "Shared/RedisKit"
        ),
        .target(
            name: "SQLiteKit",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                logging,
                metrics,
                nioPosix,
            ],
            path: "Shared/SQLiteKit"
        ),
        .target(
            name: "MatchingEngine",
            path: "Shared/MatchingEngine"
        ),
        .target(
            name: "Contracts",
            dependencies: [
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Shared/Contracts"
        ),
        .target(
            name: "Discovery",
            dependencies: [
                httpClient,
                nioCore,
                logging,
                lifecycle,
            ],
            path: "Shared/Discovery"
        ),
        .target(
            name: "HailKit",
            dependencies: [
                "Contracts", "Discovery", "RedisKit", "SQLiteKit",
                hummingbird,
                .product(name: "HummingbirdCore", package: "hummingbird"),
                httpClient,
                configuration,
                logging,
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                lifecycle,
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
                jwtKit,
                .product(name: "Crypto", package: "swift-crypto"),
                nioPosix,
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Shared/HailKit"
        ),
        .target(
            name: "EventBus",
            dependencies: [
                "RedisKit", "SQLiteKit", "Contracts", "HailKit",
                logging,
                lifecycle,
                nioPosix,
            ],
            path: "Shared/EventBus"
        ),
        .target(
            name: "HailKitTesting",
            dependencies: [
                "HailKit", "RedisKit", "Discovery", "Contracts",
                logging,
                httpClient,
                lifecycle,
                configuration,
                nioPosix,
            ],
            path: "Shared/HailKitTesting"
        ),
        .executableTarget(
            name: "RedisBench",
            dependencies: [
                "RedisKit", nioCore, nioPosix,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "LoadTests/RedisBench"
        ),
        .executableTarget(
            name: "Runner",
            dependencies: [
                "HailKit", "Contracts", httpClient, logging, lifecycle, nioCore,
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
            ],
            path: "Tools/Hailstorm"
        ),
        .executableTarget(
            name: "Load",
            dependencies: [
                "HailKit", "Contracts", "RedisKit", "BenchSupport", httpClient, nioCore, nioPosix,
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "LoadTests/Load"
        ),
        .executableTarget(
            name: "MatchingBench",
            dependencies: [
                "MatchingEngine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "LoadTests/MatchingBench"
        ),
        .executableTarget(
            name: "CouponBench",
            dependencies: [
                "HailKit", "HailKitTesting", "Contracts", "RedisKit", "BenchSupport", httpClient, nioCore,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "LoadTests/CouponBench"
        ),
        .target(name: "BenchSupport", dependencies: ["Contracts", "RedisKit"], path: "LoadTests/BenchSupport"),
        .executableTarget(name: "BareEndpoint", dependencies: [hummingbird], path: "LoadTests/BareEndpoint"),
        testTarget("MatchingEngine", ["MatchingEngine", "HailKitTesting"]),
        testTarget("RedisKit", ["RedisKit", "HailKitTesting"]),
        testTarget("SQLiteKit", ["SQLiteKit", "HailKitTesting"]),
        testTarget("Discovery", ["Discovery", "HailKitTesting"]),
        testTarget("HailKit", [
            "HailKit", "HailKitTesting", "Contracts", nioPosix, .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
        ]),
        testTarget("EventBus", ["EventBus", "HailKitTesting"]),
        testTarget("Login", ["Login", "HailKitTesting"]),
        testTarget("Gateway", [
            "Gateway", "Login", "Coupon", "HailKitTesting", "Discovery",
            .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
        ]),
        testTarget("Coupon", ["Coupon", "HailKit", "HailKitTesting", "Contracts", "SQLiteKit", "EventBus", "RedisKit"]),
        testTarget("Payment", ["Payment", "Contracts"]),
        testTarget("Ad", [
            "Ad", "Gateway", "Coupon", "HailKit", "HailKitTesting", "Contracts", "EventBus", "RedisKit",
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        testTarget("Analytics", [
            "Analytics", "Gateway", "HailKit", "HailKitTesting", "Contracts", "EventBus", "RedisKit", "MatchingEngine",
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        testTarget("Command", [
            "Command", "Ad", "Coupon", "Order", "Settlement", "Gateway", "HailKit", "HailKitTesting", "Contracts", "RedisKit",
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        testTarget("Runner", ["HailKitTesting", "Load", nioCore]),
        testTarget("Deploy", ["Contracts", .product(name: "Yams", package: "Yams")]),
        testTarget("Ride", [
            "HailKit", "HailKitTesting", "Contracts", "EventBus", "RedisKit",
            .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
