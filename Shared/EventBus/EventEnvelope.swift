import Contracts
import Foundation
import RedisKit

/// An event as it travels: id, type, source and the JSON payload.
public struct EventEnvelope: Sendable, Hashable {
    /// Unique per event, kept across republishing: consumers deduplicate on it.
    public var id: String
    public var type: String
    public var stream: String
    public var source: String
    public var occurredAt: Double
    /// The event as JSON.
    public var payload: [UInt8]
    /// The Redis stream entry it arrived as (set on the consuming side).
    public var entryID: String?

    public init(id: String, type: String, stream: String, source: String, occurredAt: Double, payload: [UInt8], entryID: String? = nil) {
        self.id = id
        self.type = type
        self.stream = stream
        self.source = source
        self.occurredAt = occurredAt
        self.payload = payload
        self.entryID = entryID
    }

    /// Wraps a domain event with a new id. `type` overrides the event's static type, for an event struct
    /// that carries several types (an order's transitions: `order.assigned`, `order.completed`…).
    public init<E: DomainEvent>(
        _ event: E, source: String, type: String? = nil, id: String = RandomID.timeOrderedUUID(), at date: Date = Date()
    ) throws {
        self.init(
            id: id, type: type ?? E.type, stream: E.stream, source: source, occurredAt: date.timeIntervalSince1970,
            payload: try Self.encode(event))
    }

    /// The payload of `event`: written on its own when it can be (`WritableJSON`: a trip's moves, the
    /// fleet's fixes), by an encoder with sorted keys otherwise.
    static func encode<E: DomainEvent>(_ event: E) throws -> [UInt8] {
        if let bytes = PlainJSON.bytes(of: event) { return bytes }
        return Array(try encoder.encode(event))
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// The payload decoded as `E`: read on its own when it has its plain shape (`ScannableJSON`), by the
    /// decoder otherwise.
    public func decode<E: DomainEvent>(_ type: E.Type) throws -> E {
        if let event = payload.withUnsafeBytes({ PlainJSON.read(E.self, from: $0) }) { return event }
        return try JSONDecoder().decode(E.self, from: Data(payload))
    }

    /// The Redis stream key of a stream name.
    public static func streamKey(_ stream: String) -> String { "events:\(stream)" }

    /// The dead-letter stream of a stream name.
    public static func deadLetterKey(_ stream: String) -> String { "events:\(stream):dead" }

    public var fields: [(String, any RESPArgumentConvertible)] {
        [("id", id), ("type", type), ("source", source), ("at", String(occurredAt)), ("payload", payload)]
    }

    /// The envelope a stream entry carries, or nil when the entry is not one.
    public init?(entry: StreamEntry, stream: String) {
        guard let id = entry.string("id"), let type = entry.string("type"), let payload = entry.fields["payload"] else {
            return nil
        }
        self.init(
            id: id, type: type, stream: stream, source: entry.string("source") ?? "",
            occurredAt: entry.string("at").flatMap(Double.init) ?? 0, payload: payload, entryID: entry.id)
    }
}
