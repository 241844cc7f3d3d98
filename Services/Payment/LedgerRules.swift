import Contracts

/// How a payment is written in the double-entry ledger. For a fare F with a coupon discount D and the
/// platform's commission C (a share of the fare):
///
/// | account | entry |
/// |---|---|
/// | `rider:<id>` | −(F − D): what the rider paid |
/// | `driver:<id>` | +(F − C): the driver earns the fare less commission |
/// | `platform:commission` | +C |
/// | `platform:coupon-subsidy` | −D: the platform pays for the coupon |
///
/// The entries sum to zero; a refund is the same entries negated.
struct LedgerRules: Sendable {
    /// The platform's share of each fare, in percent (0–100).
    let commissionPercent: Int

    static let commissionAccount = "platform:commission"
    static let subsidyAccount = "platform:coupon-subsidy"

    static func riderAccount(_ id: String) -> String { "rider:\(id)" }
    static func driverAccount(_ id: String) -> String { "driver:\(id)" }

    /// Commission on `fareCents`, rounded to the nearest cent.
    func commission(fareCents: Int) -> Int {
        (fareCents * commissionPercent + 50) / 100
    }

    func entries(
        payment: String, rider: String, driver: String, fareCents: Int, discountCents: Int, at: Double
    ) -> [PaymentAPI.LedgerEntry] {
        let commission = commission(fareCents: fareCents)
        var lines: [(String, Int)] = [
            (Self.riderAccount(rider), -(fareCents - discountCents)),
            (Self.driverAccount(driver), fareCents - commission),
            (Self.commissionAccount, commission),
        ]
        if discountCents > 0 { lines.append((Self.subsidyAccount, -discountCents)) }
        return lines.enumerated().map { index, line in
            PaymentAPI.LedgerEntry(
                id: "\(payment):\(index)", paymentID: payment, account: line.0, amountCents: line.1, kind: "payment", at: at)
        }
    }

    /// The entries that undo `entries`.
    func reversal(of entries: [PaymentAPI.LedgerEntry], at: Double) -> [PaymentAPI.LedgerEntry] {
        entries.filter { $0.kind == "payment" }.map { entry in
            PaymentAPI.LedgerEntry(
                id: entry.id + ":refund", paymentID: entry.paymentID, account: entry.account, amountCents: -entry.amountCents,
                kind: "refund", at: at)
        }
    }
}
