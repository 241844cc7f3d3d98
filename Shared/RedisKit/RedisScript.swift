import NIOConcurrencyHelpers

/// A Lua script run by its SHA1 digest (`EVALSHA`), loaded on first use.
///
/// When the server answers `NOSCRIPT` (it restarted, or someone ran `SCRIPT FLUSH`) the script is sent
/// whole with `EVAL`, which also caches it again, and the caller never notices.
public final class RedisScript: Sendable {
    public let source: String
    private let sha = NIOLockedValueBox<String?>(nil)

    public init(_ source: String) {
        self.source = source
    }

    /// The digest Redis gave the script, once loaded.
    public var digest: String? { sha.withLockedValue { $0 } }

    func load(on client: RedisClient) async throws -> String {
        if let known = digest { return known }
        guard let loaded = try await client.send(RedisCommand("SCRIPT", "LOAD", source)).string else {
            throw RedisError.unexpectedReply("SCRIPT LOAD returned no digest")
        }
        sha.withLockedValue { $0 = loaded }
        return loaded
    }
}

extension RedisClient {
    /// Runs `script` with `keys` and `arguments`; an error the script raises throws `RedisError.server`.
    @discardableResult
    public func run(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [any RESPArgumentConvertible] = []
    ) async throws -> RESPValue {
        let digest = try await script.load(on: self)
        let tail: [any RESPArgumentConvertible] = [keys.count] + keys + arguments
        do {
            return try await send(RedisCommand("EVALSHA", [digest] + tail))
        } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
            return try await send(RedisCommand("EVAL", [script.source] + tail))
        }
    }
}
