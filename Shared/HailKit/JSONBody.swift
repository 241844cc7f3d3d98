import Contracts
import Foundation
import Hummingbird
import NIOCore

/// Reading and writing JSON bodies, with decoding failures turned into 400 problems that name the field.
public enum JSONBody {
    public static let decoder: JSONDecoder = JSONDecoder()

    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Decodes the request body as `T`; an empty, malformed or ill-typed body is a 400 problem.
    public static func decode<T: Decodable>(_ type: T.Type, from request: Request, context: HailRequestContext) async throws -> T {
        let buffer = try await request.body.collect(upTo: context.maxUploadSize)
        if type == NoContent.self, buffer.readableBytes == 0 {
            return NoContent() as! T
        }
        return try decode(T.self, from: try requireBody(buffer))
    }

    /// `buffer` when it holds something; an empty body is a 400 problem.
    public static func requireBody(_ buffer: ByteBuffer) throws -> ByteBuffer {
        guard buffer.readableBytes > 0 else {
            throw Problem.invalidBody("The request needs a JSON body")
        }
        return buffer
    }

    /// Decodes `buffer` as `T`; malformed or ill-typed JSON is a 400 problem naming the field.
    public static func decode<T: Decodable>(_ type: T.Type, from buffer: ByteBuffer) throws -> T {
        if let value = buffer.withUnsafeReadableBytes({ PlainJSON.read(T.self, from: $0) }) { return value }
        do {
            return try decoder.decode(T.self, from: Data(buffer.readableBytesView))
        } catch let error as DecodingError {
            throw problem(for: error)
        }
    }

    public static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        if status == .noContent {
            return Response(status: .noContent)
        }
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: try encode(value)))
    }

    /// `value` as JSON: written on its own when it can be (`WritableJSON`), by the encoder otherwise.
    public static func encode<T: Encodable>(_ value: T) throws -> ByteBuffer {
        if let bytes = PlainJSON.bytes(of: value) { return ByteBuffer(bytes: bytes) }
        return ByteBuffer(bytes: try encoder.encode(value))
    }

    static func problem(for error: DecodingError) -> Problem {
        func path(_ codingPath: [any CodingKey], _ last: (any CodingKey)? = nil) -> String? {
            let keys = codingPath + (last.map { [$0] } ?? [])
            guard !keys.isEmpty else { return nil }
            return keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let field = path(context.codingPath, key)
            return .invalidBody("Missing field '\(field ?? key.stringValue)'", field: field)
        case .typeMismatch(let type, let context):
            let field = path(context.codingPath)
            return .invalidBody("Field '\(field ?? "body")' should be \(describe(type))", field: field)
        case .valueNotFound(let type, let context):
            let field = path(context.codingPath)
            return .invalidBody("Field '\(field ?? "body")' must not be null; expected \(describe(type))", field: field)
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            if context.codingPath.isEmpty {
                return .invalidBody("The body is not valid JSON")
            }
            // The decoder's own wording names Swift types ("Cannot initialize Role from …"); Hailstorm's
            // own checks (a latitude's range) say what is allowed, and pass through.
            let reason = context.debugDescription.hasPrefix("Cannot initialize")
                ? "is not one of the allowed values" : context.debugDescription
            return .invalidBody("Field '\(field ?? "body")' has an invalid value: \(reason)", field: field)
        @unknown default:
            return .invalidBody("The body could not be decoded")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "a boolean"
        default:
            let name = String(describing: type)
            return name.hasPrefix("Array") ? "an array" : name.hasPrefix("Dictionary") ? "an object" : "an object or value of its documented shape"
        }
    }
}

extension RouterMethods where Context == HailRequestContext {
    /// Registers the handler of a contract endpoint: the body is decoded into the endpoint's request type
    /// (a 400 problem when it is not one), the handler's answer encoded with the endpoint's success status.
    @discardableResult
    public func on<Req, Res>(
        _ endpoint: Endpoint<Req, Res>,
        handler: @escaping @Sendable (Req, Request, HailRequestContext) async throws -> Res
    ) -> Self {
        let route = RouterPath(endpoint.path)
        return self.on(route, method: endpoint.method) { request, context in
            let body: Req
            if Req.self == NoContent.self {
                body = NoContent() as! Req
            } else {
                body = try await JSONBody.decode(Req.self, from: request, context: context)
            }
            let result = try await handler(body, request, context)
            return try JSONBody.response(result, status: endpoint.successStatus)
        }
    }
}
