import Foundation
public import HTTPTypes

/// A typed API operation of one service: how to call it and what goes in and out.
///
/// The server registers its routes from these values and every client calls through them, so changing a
/// request or response type is a compile error in every caller.
public struct Endpoint<Request: Codable & Sendable, Response: Codable & Sendable>: Sendable {
    /// The service that serves it, as discovery knows it (`login`, `order`…).
    public let service: String
    public let method: HTTPRequest.Method
    /// Path template; `{name}` marks a path parameter (`/v1/users/{id}`).
    public let path: String
    /// The status of a successful answer.
    public let successStatus: HTTPResponse.Status
    /// Whether repeating the call cannot do harm; only such calls (and calls with an Idempotency-Key) are retried.
    public let isIdempotent: Bool

    public init(
        service: String,
        _ method: HTTPRequest.Method,
        _ path: String,
        successStatus: HTTPResponse.Status = .ok,
        isIdempotent: Bool? = nil
    ) {
        self.service = service
        self.method = method
        self.path = path
        self.successStatus = successStatus
        self.isIdempotent = isIdempotent ?? [.get, .head, .put, .delete, .options].contains(method)
    }

    /// The path with its `{name}` parameters filled in (percent-encoded).
    public func path(_ parameters: [String: String] = [:]) -> String {
        var result = path
        for (name, value) in parameters {
            let encoded = value.addingPathPercentEncoding()
            result = result.replacingOccurrences(of: "{\(name)}", with: encoded)
        }
        return result
    }

    /// The names of the path parameters, in order.
    public var parameterNames: [String] {
        path.split(separator: "/").compactMap { part in
            part.hasPrefix("{") && part.hasSuffix("}") ? String(part.dropFirst().dropLast()) : nil
        }
    }
}

/// The body of a request or response that carries nothing.
public struct NoContent: Codable, Sendable, Hashable {
    public init() {}
}

extension String {
    fileprivate func addingPathPercentEncoding() -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return addingPercentEncoding(withAllowedCharacters: allowed) ?? self
    }
}
