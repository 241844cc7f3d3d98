import Contracts
import Testing

/// How split services are addressed: ids that name their shard, the shard a new entity's key goes to,
/// the map every instance is told, and one page made of every shard's.
@Suite struct ShardsTests {
    @Test("an id names its shard; an id from before the split is shard 0's; a shard the service does not have names nothing")
    func ids() {
        #expect(Shards.id("8f3a", shard: 2, of: 3) == "s2-8f3a")
        #expect(Shards.id("8f3a", shard: 0, of: 1) == "8f3a", "an unsplit service's ids stay as they were")
        #expect(Shards.shard(ofID: "s2-8f3a", count: 3) == 2)
        #expect(Shards.shard(ofID: "s0-8f3a", count: 3) == 0)
        #expect(Shards.shard(ofID: "5d1e7c2a-0b4f-4f7e-9a41-3c2d1e0f9a8b", count: 3) == 0)
        #expect(Shards.shard(ofID: "s7-8f3a", count: 3) == nil)
        #expect(Shards.shard(ofID: "s3-8f3a", count: 3) == nil)
        // Shapes that are not the prefix: shard 0's, as any id from before.
        for id in ["sam", "s-1", "s12", "s123-x", "S1-x", ""] {
            #expect(Shards.shard(ofID: id, count: 3) == 0, "\(id)")
        }
        let shard = Shard(index: 1, of: 3)
        #expect(shard.owns(id: shard.id("x")))
        #expect(!shard.owns(id: "s2-x") && !shard.owns(id: "x"))
        #expect(shard.group("order") == "order-s1")
        #expect(Shard(index: 0, of: 1).group("order") == "order", "an unsplit service keeps its consumer group")
    }

    @Test("keys spread evenly over the shards, and a fourth shard takes a quarter of them, each from where it was, moving no other")
    func rendezvous() {
        let keys = (0..<30_000).map { "rider-\($0)" }
        let three = keys.map { Shards.shard(forKey: $0, count: 3) }
        let four = keys.map { Shards.shard(forKey: $0, count: 4) }
        for shard in 0..<3 {
            let share = Double(three.filter { $0 == shard }.count) / Double(keys.count)
            #expect(share > 0.31 && share < 0.36, "shard \(shard) has \(share) of the keys")
        }
        let moved = zip(three, four).filter { $0 != $1 }
        #expect(moved.allSatisfy { $0.1 == 3 }, "a key moved between two of the old shards")
        let share = Double(moved.count) / Double(keys.count)
        #expect(share > 0.22 && share < 0.28, "\(share) of the keys moved")
        #expect(keys.prefix(100).allSatisfy { Shards.shard(forKey: $0, count: 3) == Shards.shard(forKey: $0, count: 3) })
        #expect(Shards.shard(forKey: "rider-1", count: 1) == 0)
    }

    @Test("the shard map: NAME=N pairs, refused with the reason when a count is not 1 to 64 or a name comes twice")
    func map() throws {
        let map = try ShardMap(parsing: " order=3, coupon = 2,payment=1")
        #expect(map.count(of: "order") == 3 && map.count(of: "coupon") == 2 && map.count(of: "payment") == 1)
        #expect(map.count(of: "ad") == 1 && !map.isSharded("payment") && map.isSharded("coupon"))
        #expect(map.description == "coupon=2,order=3")
        #expect(try ShardMap(parsing: "").counts.isEmpty)
        for text in ["order=0", "order=65", "order", "order=x", "=3", "order=3,order=2"] {
            #expect(throws: ShardMapError.self, "\(text)") { try ShardMap(parsing: text) }
        }
    }

    func order(_ id: String, at: Double) -> OrderAPI.Order {
        OrderAPI.Order(
            id: id, riderID: "r", driverID: nil, state: .created, pickup: GeoPoint(lat: 52.5, lon: 13.4),
            dropoff: GeoPoint(lat: 52.51, lon: 13.41), distanceKm: 1, fareCents: 500, surge: 1, currency: "EUR", createdAt: at,
            updatedAt: at, history: [], dispatch: nil)
    }

    @Test("the pages of every shard make one page: newest first, at most the limit, a cursor when any shard has more")
    func mergedPages() {
        let first = OrderAPI.OrderPage(orders: [order("s0-c", at: 30), order("s0-a", at: 10)], nextCursor: nil)
        let second = OrderAPI.OrderPage(orders: [order("s1-d", at: 40), order("s1-b", at: 20)], nextCursor: "more")
        let page = OrderAPI.OrderPage.merged([first, second], limit: 3)
        #expect(page.orders.map(\.id) == ["s1-d", "s0-c", "s1-b"])
        #expect(page.nextCursor == OrderAPI.OrderPage.cursor(after: order("s1-b", at: 20)))
        let all = OrderAPI.OrderPage.merged([first, OrderAPI.OrderPage(orders: second.orders, nextCursor: nil)], limit: 4)
        #expect(all.orders.count == 4 && all.nextCursor == nil, "everything shown, nothing beyond")
        let tie = OrderAPI.OrderPage.merged([first, OrderAPI.OrderPage(orders: [order("s1-z", at: 30)], nextCursor: nil)], limit: 2)
        #expect(tie.orders.map(\.id) == ["s1-z", "s0-c"], "at one time, ids descending, as each shard lists them")
        #expect(tie.nextCursor != nil)
    }
}
