/// The body of an `application/problem+json` answer (RFC 9457), as every Hailstorm service writes it.
public struct ProblemDocument: Codable, Sendable, Hashable {
    /// Stable machine-readable kind: `urn:hailstorm:problem:<slug>`.
    public var type: String
    /// Short human summary of the kind.
    public var title: String
    public var status: Int
    /// What happened this time.
    public var detail: String?
    /// The request field at fault, when there is one (`phone`, `pickup.lat`).
    public var field: String?
    /// The request id, to find the request in the logs.
    public var requestId: String?

    public init(type: String, title: String, status: Int, detail: String? = nil, field: String? = nil, requestId: String? = nil) {
        self.type = type
        self.title = title
        self.status = status
        self.detail = detail
        self.field = field
        self.requestId = requestId
    }

    public static let typePrefix = "urn:hailstorm:problem:"

    /// The slug of `type` (`invalid-body` for `urn:hailstorm:problem:invalid-body`).
    public var slug: String {
        type.hasPrefix(Self.typePrefix) ? String(type.dropFirst(Self.typePrefix.count)) : type
    }
}
