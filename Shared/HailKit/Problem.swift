import Contracts
import Foundation
import HTTPTypes
import Hummingbird

/// An error that answers the client as `application/problem+json` with a stable `type`.
///
/// Every error a Hailstorm service shows a client is one of these; bad input is always a 4xx with the
/// reason and, where it applies, the field.
public struct Problem: HTTPResponseError, CustomStringConvertible {
    public var status: HTTPResponse.Status
    /// Stable slug; the `type` is `urn:hailstorm:problem:<slug>`.
    public var slug: String
    public var title: String
    public var detail: String?
    public var field: String?
    /// Extra response headers (`Retry-After`).
    public var headers: HTTPFields

    public init(
        _ status: HTTPResponse.Status,
        slug: String,
        title: String,
        detail: String? = nil,
        field: String? = nil,
        headers: HTTPFields = [:]
    ) {
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.field = field
        self.headers = headers
    }

    /// Re-creates a problem another service answered, so it passes through unchanged.
    public init(document: ProblemDocument, headers: HTTPFields = [:]) {
        self.init(
            HTTPResponse.Status(code: document.status),
            slug: document.slug,
            title: document.title,
            detail: document.detail,
            field: document.field,
            headers: headers
        )
    }

    public var description: String {
        "\(status.code) \(slug): \(detail ?? title)" + (field.map { " [field \($0)]" } ?? "")
    }

    public func document(requestID: String?) -> ProblemDocument {
        ProblemDocument(
            type: ProblemDocument.typePrefix + slug,
            title: title,
            status: status.code,
            detail: detail,
            field: field,
            requestId: requestID
        )
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let requestID = (context as? HailRequestContext)?.requestID
        return makeResponse(requestID: requestID, allocator: ByteBufferAllocator())
    }

    public func makeResponse(requestID: String?, allocator: ByteBufferAllocator) -> Response {
        var fields = headers
        fields[.contentType] = "application/problem+json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: body(requestID: requestID)))
    }

    /// The problem document's JSON, members in the order `JSONBody.encoder` sorts them. Written directly:
    /// a refusal in a flash sale is the common answer, and an encoder spent a tenth of the claim on it.
    public func body(requestID: String?) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(160 + title.utf8.count + (detail?.utf8.count ?? 0))
        buffer.writeStaticString("{")
        if let detail {
            buffer.writeStaticString("\"detail\":")
            JSONText.appendString(detail, to: &buffer)
            buffer.writeStaticString(",")
        }
        if let field {
            buffer.writeStaticString("\"field\":")
            JSONText.appendString(field, to: &buffer)
            buffer.writeStaticString(",")
        }
        if let requestID {
            buffer.writeStaticString("\"requestId\":")
            JSONText.appendString(requestID, to: &buffer)
            buffer.writeStaticString(",")
        }
        buffer.writeString("\"status\":\(status.code),\"title\":")
        JSONText.appendString(title, to: &buffer)
        buffer.writeStaticString(",\"type\":")
        JSONText.appendString(ProblemDocument.typePrefix + slug, to: &buffer)
        buffer.writeStaticString("}")
        return buffer
    }
}

extension Problem {
    public static func invalidBody(_ detail: String, field: String? = nil) -> Problem {
        Problem(.badRequest, slug: "invalid-body", title: "The request body is not valid", detail: detail, field: field)
    }

    public static func invalidField(_ field: String, _ detail: String) -> Problem {
        Problem(.badRequest, slug: "invalid-field", title: "A field of the request is not valid", detail: detail, field: field)
    }

    public static func unauthorized(_ detail: String) -> Problem {
        Problem(
            .unauthorized, slug: "unauthorized", title: "Authentication is required", detail: detail,
            headers: [.wwwAuthenticate: "Bearer"])
    }

    public static func forbidden(_ detail: String) -> Problem {
        Problem(.forbidden, slug: "forbidden", title: "Not allowed for this account", detail: detail)
    }

    public static func notFound(_ detail: String) -> Problem {
        Problem(.notFound, slug: "not-found", title: "Not found", detail: detail)
    }

    public static func conflict(_ slug: String, _ detail: String, field: String? = nil) -> Problem {
        Problem(.conflict, slug: slug, title: "Conflicts with the current state", detail: detail, field: field)
    }

    public static func tooManyRequests(retryAfterSeconds: Int) -> Problem {
        Problem(
            .tooManyRequests, slug: "rate-limited", title: "Too many requests",
            detail: "Rate limit reached; retry after \(retryAfterSeconds) s",
            headers: [.retryAfter: String(retryAfterSeconds)])
    }

    public static func payloadTooLarge(limit: Int) -> Problem {
        Problem(
            .contentTooLarge, slug: "payload-too-large", title: "The request body is too large",
            detail: "Bodies are limited to \(limit) bytes")
    }

    public static func deadlineExceeded(_ detail: String) -> Problem {
        Problem(.gatewayTimeout, slug: "deadline-exceeded", title: "The request ran out of time", detail: detail)
    }

    public static func unavailable(_ detail: String, retryAfterSeconds: Int? = nil) -> Problem {
        var headers: HTTPFields = [:]
        if let retryAfterSeconds { headers[.retryAfter] = String(retryAfterSeconds) }
        return Problem(
            .serviceUnavailable, slug: "unavailable", title: "A dependency is unavailable", detail: detail,
            headers: headers)
    }

    /// A request for what another shard of a split service owns (`Shards`): the caller's shard map differs
    /// from this instance's (a change of `shards` reaching the services one at a time).
    public static func misdirected(_ detail: String) -> Problem {
        Problem(.misdirectedRequest, slug: "misdirected", title: "Sent to the wrong shard", detail: detail)
    }

    /// The same `Idempotency-Key` came with a request that differs from the one it first answered: replaying
    /// the first answer would tell the caller their second request was done when it was not.
    public static func idempotencyKeyReused(_ detail: String) -> Problem {
        Problem(
            .unprocessableContent, slug: "idempotency-key-reused", title: "The Idempotency-Key was used for another request",
            detail: detail, field: "Idempotency-Key")
    }

    public static let internalError = Problem(
        .internalServerError, slug: "internal", title: "Internal error",
        detail: "The error was logged with the request id")
}
