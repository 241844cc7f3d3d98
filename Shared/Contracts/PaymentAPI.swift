import Foundation

/// The payment service: paying a completed ride, refunds and the double-entry ledger. Money is in cents.
public enum PaymentAPI {
    public static let service = "payment"

    /// What a rider sends to pay a completed order. Send an Idempotency-Key: the same key answers the same
    /// payment, even while the first attempt is still with the provider.
    public struct PayRequest: Codable, Sendable, Hashable {
        public var orderID: String
        /// A coupon from the rider's wallet (its claim id).
        public var couponID: String?
        /// The payment method at the provider. The sandbox provider declines `sandbox-decline` and accepts
        /// anything else (`sandbox-card` when absent).
        public var paymentMethod: String?

        public init(orderID: String, couponID: String? = nil, paymentMethod: String? = nil) {
            self.orderID = orderID
            self.couponID = couponID
            self.paymentMethod = paymentMethod
        }
    }

    public enum PaymentState: String, Codable, Sendable {
        /// With the provider now.
        case processing
        case succeeded
        /// The provider declined or failed; the order stays unpaid and the coupon is given back.
        case failed
        case refunded
    }

    /// One line of the ledger. The accounts are `rider:<id>`, `driver:<id>`, `platform:commission` and
    /// `platform:coupon-subsidy`; the entries of one payment (and of its refund) sum to zero.
    public struct LedgerEntry: Codable, Sendable, Hashable {
        /// `<payment id>:<n>`, unique across the ledger.
        public var id: String
        public var paymentID: String
        public var account: String
        /// Positive: the account received money; negative: it gave.
        public var amountCents: Int
        /// `payment` or `refund`.
        public var kind: String
        public var at: Double

        public init(id: String, paymentID: String, account: String, amountCents: Int, kind: String, at: Double) {
            self.id = id
            self.paymentID = paymentID
            self.account = account
            self.amountCents = amountCents
            self.kind = kind
            self.at = at
        }
    }

    public struct Payment: Codable, Sendable, Hashable {
        public var id: String
        public var orderID: String
        public var riderID: String
        public var driverID: String
        public var state: PaymentState
        public var fareCents: Int
        public var discountCents: Int
        /// What the rider was charged: fare − discount.
        public var amountCents: Int
        public var commissionCents: Int
        public var couponID: String?
        public var currency: String
        /// The provider's reference of the charge.
        public var providerReference: String?
        public var failureReason: String?
        public var createdAt: Double
        public var updatedAt: Double
        public var entries: [LedgerEntry]

        public init(
            id: String, orderID: String, riderID: String, driverID: String, state: PaymentState, fareCents: Int,
            discountCents: Int, amountCents: Int, commissionCents: Int, couponID: String?, currency: String,
            providerReference: String?, failureReason: String?, createdAt: Double, updatedAt: Double, entries: [LedgerEntry]
        ) {
            self.id = id
            self.orderID = orderID
            self.riderID = riderID
            self.driverID = driverID
            self.state = state
            self.fareCents = fareCents
            self.discountCents = discountCents
            self.amountCents = amountCents
            self.commissionCents = commissionCents
            self.couponID = couponID
            self.currency = currency
            self.providerReference = providerReference
            self.failureReason = failureReason
            self.createdAt = createdAt
            self.updatedAt = updatedAt
            self.entries = entries
        }
    }

    public struct RefundRequest: Codable, Sendable, Hashable {
        public var reason: String

        public init(reason: String) {
            self.reason = reason
        }
    }

    public struct AccountBalance: Codable, Sendable, Hashable {
        public var account: String
        public var balanceCents: Int

        public init(account: String, balanceCents: Int) {
            self.account = account
            self.balanceCents = balanceCents
        }
    }

    /// The ledger's books: every account's balance, their total (zero when the books balance) and any
    /// payment whose entries do not sum to zero (must be empty).
    public struct Ledger: Codable, Sendable, Hashable {
        public var totalCents: Int
        public var entries: Int
        public var payments: Int
        public var accounts: [AccountBalance]
        public var unbalancedPayments: [String]

        public init(totalCents: Int, entries: Int, payments: Int, accounts: [AccountBalance], unbalancedPayments: [String]) {
            self.totalCents = totalCents
            self.entries = entries
            self.payments = payments
            self.accounts = accounts
            self.unbalancedPayments = unbalancedPayments
        }

        /// The books of every shard of a split payment service as one: each shard keeps whole payments
        /// with all their entries, so counts and balances add up (an account paid on several shards, a
        /// driver's, has its balances summed), accounts in one shard's order.
        public static func merged(_ ledgers: [Ledger]) -> Ledger {
            var balances: [String: Int] = [:]
            for ledger in ledgers {
                for account in ledger.accounts { balances[account.account, default: 0] += account.balanceCents }
            }
            return Ledger(
                totalCents: ledgers.reduce(0) { $0 + $1.totalCents }, entries: ledgers.reduce(0) { $0 + $1.entries },
                payments: ledgers.reduce(0) { $0 + $1.payments },
                accounts: balances.sorted { $0.key < $1.key }.map { AccountBalance(account: $0.key, balanceCents: $0.value) },
                unbalancedPayments: ledgers.flatMap(\.unbalancedPayments).sorted())
        }
    }

    public static let pay = Endpoint<PayRequest, Payment>(service: service, .post, "/v1/payments", successStatus: .created)
    public static let payment = Endpoint<NoContent, Payment>(service: service, .get, "/v1/payments/{id}")
    /// Admin. Refunding a refunded payment answers it as it is.
    public static let refund = Endpoint<RefundRequest, Payment>(
        service: service, .post, "/v1/payments/{id}/refund", isIdempotent: true)
    /// Admin or service. Query `account` narrows the balances to one account.
    public static let ledger = Endpoint<NoContent, Ledger>(service: service, .get, "/v1/ledger")
}

public enum PaymentEvents {
    /// A payment went through. Carries its ledger entries, so that settlement keeps its own copy.
    public struct Succeeded: DomainEvent, Hashable {
        public static let stream = "payment"
        public static let type = "payment.succeeded"
        public var paymentID: String
        public var orderID: String
        public var riderID: String
        public var driverID: String
        public var fareCents: Int
        public var discountCents: Int
        public var amountCents: Int
        public var commissionCents: Int
        public var couponID: String?
        public var entries: [PaymentAPI.LedgerEntry]
        public var at: Double

        public init(
            paymentID: String, orderID: String, riderID: String, driverID: String, fareCents: Int, discountCents: Int,
            amountCents: Int, commissionCents: Int, couponID: String?, entries: [PaymentAPI.LedgerEntry], at: Double
        ) {
            self.paymentID = paymentID
            self.orderID = orderID
            self.riderID = riderID
            self.driverID = driverID
            self.fareCents = fareCents
            self.discountCents = discountCents
            self.amountCents = amountCents
            self.commissionCents = commissionCents
            self.couponID = couponID
            self.entries = entries
            self.at = at
        }
    }

    /// A payment failed: the order stays unpaid, and the coupon it named goes back to the rider's wallet
    /// (coupon consumes this, so the coupon returns even when the direct call did not get through).
    public struct Failed: DomainEvent, Hashable {
        public static let stream = "payment"
        public static let type = "payment.failed"
        public var paymentID: String
        public var orderID: String
        public var riderID: String
        public var couponID: String?
        public var reason: String
        public var at: Double

        public init(paymentID: String, orderID: String, riderID: String, couponID: String?, reason: String, at: Double) {
            self.paymentID = paymentID
            self.orderID = orderID
            self.riderID = riderID
            self.couponID = couponID
            self.reason = reason
            self.at = at
        }
    }

    /// A payment was refunded: the entries reversing it.
    public struct Refunded: DomainEvent, Hashable {
        public static let stream = "payment"
        public static let type = "payment.refunded"
        public var paymentID: String
        public var orderID: String
        public var driverID: String
        public var entries: [PaymentAPI.LedgerEntry]
        public var reason: String
        public var at: Double

        public init(paymentID: String, orderID: String, driverID: String, entries: [PaymentAPI.LedgerEntry], reason: String, at: Double) {
            self.paymentID = paymentID
            self.orderID = orderID
            self.driverID = driverID
            self.entries = entries
            self.reason = reason
            self.at = at
        }
    }
}
