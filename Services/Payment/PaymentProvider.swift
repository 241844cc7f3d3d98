import Contracts
import Foundation
import RedisKit

/// Where money actually moves: a card processor, a wallet, a bank. Payment asks it to charge and to
/// refund, naming each charge by the payment's id so that the provider itself never charges one payment
/// twice (as real processors dedupe on an idempotency key).
protocol PaymentProvider: Sendable {
    /// Charges `amountCents` for the payment `reference`; `.declined` when the provider refused.
    func charge(reference: String, amountCents: Int, currency: String, method: String) async throws -> ChargeOutcome
    /// Returns a charge's money to the payer. Refunding twice refunds once.
    func refund(reference: String) async throws
    /// What the provider knows of a charge: after a crash, whether the money moved.
    func lookup(reference: String) async throws -> ChargeOutcome?
}

enum ChargeOutcome: Sendable, Equatable {
    /// The money moved; `providerReference` is the provider's name for it.
    case approved(providerReference: String)
    case declined(reason: String)
}

/// A simulated payment provider — a sandbox, not a processor: it moves no money. It takes
/// `latency` per call, declines the payment method `sandbox-decline` and, at random, `failureRate` of all
/// charges (an unreachable processor, a bank saying no). Its books are a Redis hash (one field per charge),
/// shared by every payment instance and kept across restarts, so a repeated charge of one reference is
/// answered from the books instead of charging again.
struct SandboxPaymentProvider: PaymentProvider {
    let redis: RedisClient
    /// The hash holding the sandbox's charges (`payment:sandbox:charges`).
    let key: String
    let latency: Duration
    /// 0…1.
    let failureRate: Double

    static let declinedMethod = "sandbox-decline"

    func charge(reference: String, amountCents: Int, currency: String, method: String) async throws -> ChargeOutcome {
        if let known = try await lookup(reference: reference) { return known }
        try await Task.sleep(for: latency)
        let outcome: ChargeOutcome
        if method == Self.declinedMethod {
            outcome = .declined(reason: "the sandbox declines the payment method \(Self.declinedMethod)")
        } else if failureRate > 0, Double.random(in: 0..<1) < failureRate {
            outcome = .declined(reason: "the sandbox failed this charge at random (failure rate \(failureRate))")
        } else {
            outcome = .approved(providerReference: "sbx_\(RandomID.uuid().prefix(18))")
        }
        let record: String = switch outcome {
        case .approved(let providerReference): "charged \(providerReference) \(amountCents) \(currency)"
        case .declined(let reason): "declined \(reason)"
        }
        // The first record of a reference wins: two racing charges of one payment answer the same.
        _ = try await redis.send(RedisCommand("HSETNX", key, reference, record))
        return try await lookup(reference: reference) ?? outcome
    }

    func refund(reference: String) async throws {
        try await Task.sleep(for: latency)
        _ = try await redis.send(RedisCommand("HSET", key + ":refunds", reference, String(Date().timeIntervalSince1970)))
    }

    func lookup(reference: String) async throws -> ChargeOutcome? {
        guard let record = try await redis.send(RedisCommand("HGET", key, reference)).string else { return nil }
        let parts = record.split(separator: " ", maxSplits: 2).map(String.init)
        if parts.first == "charged", parts.count > 1 { return .approved(providerReference: parts[1]) }
        return .declined(reason: parts.count > 1 ? parts.dropFirst().joined(separator: " ") : "declined")
    }
}
