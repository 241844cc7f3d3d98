// swift-tools-version: 6.2
import PackageDescription

/// Third-party products every service links.
let serviceBase: [Target.Dependency] = [
    "HailKit", "Contracts", "Discovery", "RedisKit", "SQLiteKit", "EventBus",
    .product(name: "Hummingbird", package: "hummingbird"),
    .product(name: "Configuration", package: "swift-configuration"),
    .product(name: "Logging", package: "swift-log"),
    .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
]

/// One service: an executable `hailstorm-<name>` built from `Services/<Folder>`.
/// Adding a service to Hailstorm is one call of this helper in `services` below.
func service(_ folder: String, product: String, _ extra: [Target.Dependency] = []) -> (Product, Target) {
    (
        .executable(name: "hailstorm-\(product)", targets: [folder]),
        .executableTarget(name: folder, dependencies: serviceBase + extra, path: "Services/\(folder)")
    )
}

let services = [
    service("Login", product: "login", [
        .product(name: "JWTKit", package: "jwt-kit"),
        .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
        .product(name: "Crypto", package: "swift-crypto"),
    ]),
    service("Gateway", product: "gateway", [
        .product(name: "JWTKit", package: "jwt-kit"),
    ]),
]

let package = Package(
    name: "Hailstorm",
    platforms: [.macOS(.v15)],
    products: services.map(\.0) + [
        .executable(name: "hailstorm-redis-bench", targets: ["RedisBench"]),
        .library(name: "HailKit", targets: ["HailKit"]),
        .library(name: "HailKitTesting", targets: ["HailKitTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: ["JSON", "CommandLineArguments"]),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.100.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.1.0"),
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
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Shared/RedisKit"
        ),
        .target(
            name: "SQLiteKit",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Shared/SQLiteKit"
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
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Shared/Discovery"
        ),
        .target(
            name: "HailKit",
            dependencies: [
                "Contracts", "Discovery", "RedisKit", "SQLiteKit",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            path: "Shared/HailKit"
        ),
        .target(
            name: "EventBus",
            dependencies: [
                "RedisKit", "SQLiteKit", "Contracts",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Shared/EventBus"
        ),
        .target(
            name: "HailKitTesting",
            dependencies: [
                "HailKit", "RedisKit", "Discovery",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            path: "Shared/HailKitTesting"
        ),
        .executableTarget(
            name: "RedisBench",
            dependencies: [
                "RedisKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "LoadTests/RedisBench"
        ),
        .testTarget(name: "RedisKitTests", dependencies: ["RedisKit", "HailKitTesting"], path: "Tests/RedisKitTests"),
        .testTarget(name: "SQLiteKitTests", dependencies: ["SQLiteKit", "HailKitTesting"], path: "Tests/SQLiteKitTests"),
        .testTarget(name: "DiscoveryTests", dependencies: ["Discovery", "HailKitTesting"], path: "Tests/DiscoveryTests"),
        .testTarget(
            name: "HailKitTests",
            dependencies: [
                "HailKit", "HailKitTesting",
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
            ],
            path: "Tests/HailKitTests"
        ),
        .testTarget(name: "EventBusTests", dependencies: ["EventBus", "HailKitTesting"], path: "Tests/EventBusTests"),
        .testTarget(name: "LoginTests", dependencies: ["Login", "HailKitTesting"], path: "Tests/LoginTests"),
        .testTarget(name: "GatewayTests", dependencies: ["Gateway", "Login", "HailKitTesting"], path: "Tests/GatewayTests"),
    ],
    swiftLanguageModes: [.v6]
)
