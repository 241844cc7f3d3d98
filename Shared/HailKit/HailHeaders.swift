import HTTPTypes

/// Header names Hailstorm services speak among themselves.
public enum HailHeaders {
    public static let requestID = HTTPField.Name("X-Request-ID")!
    public static let traceParent = HTTPField.Name("traceparent")!
    public static let traceState = HTTPField.Name("tracestate")!
    /// Milliseconds the caller will still wait. Relative, so hosts need not agree on the clock.
    public static let deadline = HTTPField.Name("X-Hailstorm-Deadline-Ms")!
    public static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    /// The gateway's attestation that it verified the token it passes on (`TokenAttestations`).
    public static let verifiedToken = HTTPField.Name("X-Hailstorm-Verified")!
}

extension HailHeaders {
    /// The longest Idempotency-Key a service keeps.
    public static let idempotencyKeyMaximum = 200

    /// The request's Idempotency-Key (nil when it has none); one that is empty or longer than
    /// `idempotencyKeyMaximum` characters is a 400 problem naming the header.
    public static func idempotencyKey(in headers: HTTPFields) throws -> String? {
        guard let key = headers[idempotencyKey] else { return nil }
        guard (1...idempotencyKeyMaximum).contains(key.count) else {
            throw Problem.invalidField("Idempotency-Key", "must be 1 to \(idempotencyKeyMaximum) characters")
        }
        return key
    }
}
