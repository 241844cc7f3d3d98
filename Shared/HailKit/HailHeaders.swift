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
