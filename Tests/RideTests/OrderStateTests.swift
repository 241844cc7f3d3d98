import Contracts
import Testing

@Suite("the order state machine")
struct OrderStateTests {
    @Test("exactly the moves of the design are allowed; final states lead nowhere")
    func moves() {
        let allowed: Set<String> = [
            "created>offered", "offered>assigned", "assigned>arriving", "arriving>in_trip", "in_trip>completed",
            "completed>paid", "created>cancelled", "offered>cancelled", "assigned>cancelled", "arriving>cancelled",
            "created>expired", "offered>expired",
        ]
        for from in OrderState.allCases {
            for to in OrderState.allCases {
                #expect(from.canMove(to: to) == allowed.contains("\(from.rawValue)>\(to.rawValue)"), "\(from) → \(to)")
            }
        }
        #expect(OrderState.allCases.filter(\.isFinal) == [.paid, .cancelled, .expired])
        #expect(OrderState.inTrip.eventType == "order.in_trip")
    }
}
