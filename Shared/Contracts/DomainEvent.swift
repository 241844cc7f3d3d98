/// A fact a service publishes for others: it names its stream and type, and its payload is JSON.
public protocol DomainEvent: Codable, Sendable {
    /// The stream it travels on (`user`, `order`…); the Redis stream key is `events:<stream>`.
    static var stream: String { get }
    /// The stable type name consumers dispatch on (`user.signed_up`).
    static var type: String { get }
}

/// Roles a signed-in account can have.
public enum Role: String, Codable, Sendable, CaseIterable {
    case rider
    case driver
    case admin
    /// Another Hailstorm service calling on its own behalf (matching assigning an order, order-grab
    /// handing over a won grab). Nobody signs up with it; a service signs its own short-lived token.
    case service
}
