import Foundation
import Logging
import NIOConcurrencyHelpers

/// Writes one JSON object per log line to stdout: time, level, service, instance, message, label and
/// every metadata field (the request id and trace id among them), so log pipelines need no parsing rules.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let service: String
    private let instance: String

    public init(label: String, service: String, instance: String, level: Logger.Level = .info) {
        self.label = label
        self.service = service
        self.instance = instance
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    private static let lock = NIOLock()
    /// Only used while holding `lock`.
    nonisolated(unsafe) private static let timeFormatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()

    public func log(
        level: Logger.Level,
        message: Logger.Message,
        metadata explicit: Logger.Metadata?,
        source: String,
        file: String,
        function: String,
        line: UInt
    ) {
        var fields: [String: Any] = [:]
        for (key, value) in self.metadata { fields[key] = Self.json(value) }
        if let provided = metadataProvider?.get() {
            for (key, value) in provided { fields[key] = Self.json(value) }
        }
        if let explicit {
            for (key, value) in explicit { fields[key] = Self.json(value) }
        }
        fields["level"] = level.rawValue
        fields["msg"] = message.description
        fields["service"] = service
        fields["instance"] = instance
        fields["logger"] = label
        let line: Data
        do {
            var object = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
            // Time first, for people reading the raw lines.
            let time = Self.lock.withLock { Self.timeFormatter.string(from: Date()) }
            object = Data("{\"ts\":\"\(time)\",".utf8) + object.dropFirst()
            line = object + Data("\n".utf8)
        } catch {
            line = Data("{\"level\":\"error\",\"msg\":\"unloggable message\"}\n".utf8)
        }
        Self.lock.withLock {
            FileHandle.standardOutput.write(line)
        }
    }

    private static func json(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let s): return s
        case .stringConvertible(let c): return c.description
        case .array(let values): return values.map(json)
        case .dictionary(let dict): return dict.mapValues(json)
        }
    }
}
