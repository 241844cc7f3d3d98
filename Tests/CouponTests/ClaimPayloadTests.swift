@testable import Coupon
import Contracts
import Foundation
import Testing

/// A claim's event is written by hand (`FlashSale.payload`), not encoded: what the consumer decodes from
/// it must be the claim, whatever a rider's idempotency key or an id holds.
@Suite("flash sale: the claim event as written")
struct ClaimPayloadTests {
    @Test("decodes to the claim, with and without an idempotency key, with quotes, backslashes, control characters and non-ASCII")
    func decodesToTheClaim() throws {
        let events = [
            CouponEvents.Claimed(claimID: "c1", campaignID: "camp", userID: "u1", claimedAt: 1_764_640_000.123456, idempotencyKey: nil),
            CouponEvents.Claimed(
                claimID: "c2", campaignID: "camp/2", userID: "rider \"quoted\" \\ back", claimedAt: 1_764_640_001,
                idempotencyKey: "key\nwith\tcontrols\u{01}\u{1f} and é, 乘车, 🚕"),
            CouponEvents.Claimed(claimID: "", campaignID: "", userID: "", claimedAt: 0, idempotencyKey: ""),
        ]
        for event in events {
            let payload = FlashSale.payload(of: event)
            #expect(try JSONDecoder().decode(CouponEvents.Claimed.self, from: Data(payload)) == event)
            #expect(try JSONSerialization.jsonObject(with: Data(payload)) is [String: Any])
        }
        let keyed = String(decoding: FlashSale.payload(of: events[1]), as: UTF8.self)
        let keys = ["campaignID", "claimID", "claimedAt", "idempotencyKey", "userID"].map { keyed.range(of: "\"\($0)\":")!.lowerBound }
        #expect(keys == keys.sorted(), "keys in the encoder's sorted order")
    }
}
