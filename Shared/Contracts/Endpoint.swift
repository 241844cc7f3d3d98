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
    /// Placeholders without a value stay as they are. Built in one pass over the template: this runs for
    /// every call one service makes to another.
    public func path(_ parameters: [String: String] = [:]) -> String {
        guard !parameters.isEmpty else { return path }
        var result = ""
        result.reserveCapacity(path.utf8.count + 64)
        var rest = path[...]
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            result += rest[..<open]
            if let value = parameters[String(rest[rest.index(after: open)..<close])] {
                result += value.addingPathPercentEncoding()
            } else {
                result += rest[open...close]
            }
            rest = rest[rest.index(after: close)...]
        }
        result += rest
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

extension UInt8 {
    /// One of RFC 3986's unreserved characters, which a path segment carries as they are.
    public var isUnreservedInURI: Bool {
        switch self {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            true
        default: false
        }
    }
}

extension String {
    /// The value as one path segment: RFC 3986's unreserved characters as they are, every other byte of
    /// its UTF-8 percent-encoded.
    fileprivate func addingPathPercentEncoding() -> String {
        if utf8.allSatisfy(\.isUnreservedInURI) { return self }
        let hex = Array("0123456789ABCDEF".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count * 3)
        for byte in utf8 {
            if byte.isUnreservedInURI {
                bytes.append(byte)
            } else {
                bytes.append(UInt8(ascii: "%"))
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0x0F)])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
