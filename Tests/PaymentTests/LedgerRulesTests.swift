import Contracts
import Testing

@testable import Payment

@Suite("the ledger's rules")
struct LedgerRulesTests {
    @Test("every payment's entries sum to zero and its refund undoes each account, for any fare, discount and commission")
    func balanced() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let rules = LedgerRules(commissionPercent: Int.random(in: 0...100, using: &generator))
            let fare = Int.random(in: 0...200_000, using: &generator)
            let discount = Int.random(in: 0...fare, using: &generator)
            let entries = rules.entries(payment: "p", rider: "r", driver: "d", fareCents: fare, discountCents: discount, at: 0)
            #expect(entries.reduce(0) { $0 + $1.amountCents } == 0)
            #expect(Set(entries.map(\.id)).count == entries.count)
            let refund = rules.reversal(of: entries, at: 1)
            var net: [String: Int] = [:]
            for entry in entries + refund { net[entry.account, default: 0] += entry.amountCents }
            #expect(net.values.allSatisfy { $0 == 0 })
        }
    }

    @Test("the rider pays the fare less the coupon, the driver earns the fare less commission, the platform pays the coupon")
    func shares() {
        let rules = LedgerRules(commissionPercent: 20)
        let entries = rules.entries(payment: "p", rider: "r", driver: "d", fareCents: 1_234, discountCents: 300, at: 0)
        let by = Dictionary(uniqueKeysWithValues: entries.map { ($0.account, $0.amountCents) })
        #expect(by["rider:r"] == -934)
        #expect(by["driver:d"] == 1_234 - 247)
        #expect(by[LedgerRules.commissionAccount] == 247)
        #expect(by[LedgerRules.subsidyAccount] == -300)
        // No coupon, no subsidy line.
        #expect(rules.entries(payment: "q", rider: "r", driver: "d", fareCents: 500, discountCents: 0, at: 0).count == 3)
    }
}
