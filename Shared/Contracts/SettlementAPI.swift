import Foundation

/// The settlement service: paying drivers what the ledger says they earned, in batches, and the
/// reconciliation report. Money is in cents.
public enum SettlementAPI {
    public static let service = "settlement"

    /// What one driver is paid in a batch.
    public struct Payout: Codable, Sendable, Hashable {
        public var batchID: String
        public var driverID: String
        public var amountCents: Int
        /// Ledger entries this payout settles.
        public var entries: Int

        public init(batchID: String, driverID: String, amountCents: Int, entries: Int) {
            self.batchID = batchID
            self.driverID = driverID
            self.amountCents = amountCents
            self.entries = entries
        }
    }

    /// One run of the settlement: every driver entry not yet settled, paid once.
    public struct Batch: Codable, Sendable, Hashable {
        public var id: String
        /// `schedule`, `api` or `command`.
        public var trigger: String
        public var startedAt: Double
        public var entries: Int
        public var totalCents: Int
        public var payouts: [Payout]

        public init(id: String, trigger: String, startedAt: Double, entries: Int, totalCents: Int, payouts: [Payout]) {
            self.id = id
            self.trigger = trigger
            self.startedAt = startedAt
            self.entries = entries
            self.totalCents = totalCents
            self.payouts = payouts
        }
    }

    public struct RunRequest: Codable, Sendable, Hashable {
        /// Who asked (`api`, `command`); shown in the batch.
        public var trigger: String?

        public init(trigger: String? = nil) {
            self.trigger = trigger
        }
    }

    public struct BatchList: Codable, Sendable {
        public var batches: [Batch]

        public init(batches: [Batch]) {
            self.batches = batches
        }
    }

    /// One thing that does not add up.
    public struct Mismatch: Codable, Sendable, Hashable {
        /// `completed-not-paid`, `paid-not-completed`, `fare-mismatch`, `amount-mismatch`,
        /// `unbalanced-payment`, `ledger-differs`, `payout-mismatch`.
        public var kind: String
        public var orderID: String?
        public var paymentID: String?
        public var driverID: String?
        public var detail: String

        public init(kind: String, orderID: String? = nil, paymentID: String? = nil, driverID: String? = nil, detail: String) {
            self.kind = kind
            self.orderID = orderID
            self.paymentID = paymentID
            self.driverID = driverID
            self.detail = detail
        }
    }

    /// Completed orders against payments, payments against the ledger, the ledger against payouts.
    public struct Reconciliation: Codable, Sendable, Hashable {
        public var generatedAt: Double
        public var completedOrders: Int
        public var payments: Int
        /// The payment service's ledger total (zero when its books balance).
        public var ledgerTotalCents: Int
        public var driverEarningsCents: Int
        public var paidOutCents: Int
        /// Driver earnings not yet in a batch.
        public var unsettledCents: Int
        /// Empty when everything adds up.
        public var mismatches: [Mismatch]

        public init(
            generatedAt: Double, completedOrders: Int, payments: Int, ledgerTotalCents: Int, driverEarningsCents: Int,
            paidOutCents: Int, unsettledCents: Int, mismatches: [Mismatch]
        ) {
            self.generatedAt = generatedAt
            self.completedOrders = completedOrders
            self.payments = payments
            self.ledgerTotalCents = ledgerTotalCents
            self.driverEarningsCents = driverEarningsCents
            self.paidOutCents = paidOutCents
            self.unsettledCents = unsettledCents
            self.mismatches = mismatches
        }
    }

    /// Admin or service. Two runs at once settle each entry once: the second finds nothing left.
    public static let run = Endpoint<RunRequest, Batch>(service: service, .post, "/v1/batches", successStatus: .created)
    public static let batches = Endpoint<NoContent, BatchList>(service: service, .get, "/v1/batches")
    public static let reconciliation = Endpoint<NoContent, Reconciliation>(service: service, .get, "/v1/reconciliation")
}
