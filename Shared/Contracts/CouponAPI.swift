import Foundation

/// The coupon service: campaigns, the flash-sale claim and riders' wallets. Money is in cents.
public enum CouponAPI {
    public static let service = "coupon"

    public enum DiscountKind: String, Codable, Sendable {
        /// A fixed amount off (`amountOffCents`).
        case amount
        /// A percentage off (`percentOff`, 1–100).
        case percent
    }

    /// What an admin sends to create a campaign. Times are seconds since 1970.
    public struct NewCampaign: Codable, Sendable, Hashable {
        public var name: String
        public var city: String
        public var kind: DiscountKind
        public var amountOffCents: Int?
        public var percentOff: Int?
        /// The smallest fare the coupon applies to.
        public var minimumFareCents: Int
        /// Coupons to give away in all.
        public var stock: Int
        /// Coupons one rider may hold from this campaign.
        public var perUserLimit: Int
        public var startsAt: Double
        public var endsAt: Double

        public init(
            name: String, city: String, kind: DiscountKind, amountOffCents: Int? = nil, percentOff: Int? = nil,
            minimumFareCents: Int = 0, stock: Int, perUserLimit: Int = 1, startsAt: Double, endsAt: Double
        ) {
            self.name = name
            self.city = city
            self.kind = kind
            self.amountOffCents = amountOffCents
            self.percentOff = percentOff
            self.minimumFareCents = minimumFareCents
            self.stock = stock
            self.perUserLimit = perUserLimit
            self.startsAt = startsAt
            self.endsAt = endsAt
        }
    }

    public struct Campaign: Codable, Sendable, Hashable {
        public var id: String
        public var name: String
        public var city: String
        public var kind: DiscountKind
        public var amountOffCents: Int?
        public var percentOff: Int?
        public var minimumFareCents: Int
        public var stock: Int
        public var perUserLimit: Int
        public var startsAt: Double
        public var endsAt: Double
        public var createdAt: Double
        /// Coupons not yet claimed, as the flash sale's counter says right now.
        public var remaining: Int?
        /// Paused by an operator: claims are refused (409 `campaign-paused`) until it is resumed; coupons
        /// already claimed stay usable.
        public var paused: Bool

        public init(id: String, name: String, city: String, kind: DiscountKind, amountOffCents: Int? = nil, percentOff: Int? = nil, minimumFareCents: Int, stock: Int, perUserLimit: Int, startsAt: Double, endsAt: Double, createdAt: Double, remaining: Int? = nil, paused: Bool = false) {
            self.id = id
            self.name = name
            self.city = city
            self.kind = kind
            self.amountOffCents = amountOffCents
            self.percentOff = percentOff
            self.minimumFareCents = minimumFareCents
            self.stock = stock
            self.perUserLimit = perUserLimit
            self.startsAt = startsAt
            self.endsAt = endsAt
            self.createdAt = createdAt
            self.remaining = remaining
            self.paused = paused
        }
    }

    public struct CampaignList: Codable, Sendable {
        public var campaigns: [Campaign]

        public init(campaigns: [Campaign]) {
            self.campaigns = campaigns
        }

        /// The lists of every shard of a split coupon service as one, in the order one shard lists them
        /// (the earliest sale first).
        public static func merged(_ lists: [CampaignList]) -> CampaignList {
            CampaignList(campaigns: lists.flatMap(\.campaigns).sorted { a, b in
                a.startsAt != b.startsAt ? a.startsAt < b.startsAt : a.id < b.id
            })
        }
    }

    /// A granted claim. A repeat with the same Idempotency-Key answers the same claim.
    public struct Claim: Codable, Sendable, Hashable {
        public var claimID: String
        public var campaignID: String
        public var userID: String
        public var claimedAt: Double

        public init(claimID: String, campaignID: String, userID: String, claimedAt: Double) {
            self.claimID = claimID
            self.campaignID = campaignID
            self.userID = userID
            self.claimedAt = claimedAt
        }
    }

    /// A coupon in a rider's wallet.
    public struct Coupon: Codable, Sendable, Hashable {
        public var claimID: String
        public var campaign: Campaign
        public var claimedAt: Double
        /// `available` or `redeemed`.
        public var state: String

        public init(claimID: String, campaign: Campaign, claimedAt: Double, state: String) {
            self.claimID = claimID
            self.campaign = campaign
            self.claimedAt = claimedAt
            self.state = state
        }
    }

    public struct Wallet: Codable, Sendable {
        public var coupons: [Coupon]

        public init(coupons: [Coupon]) {
            self.coupons = coupons
        }

        /// A rider's coupons from every shard of a split coupon service (each holds those of its own
        /// campaigns), newest first as one shard lists them.
        public static func merged(_ wallets: [Wallet]) -> Wallet {
            Wallet(coupons: wallets.flatMap(\.coupons).sorted { a, b in
                a.claimedAt != b.claimedAt ? a.claimedAt > b.claimedAt : a.claimID > b.claimID
            })
        }
    }

    /// The flash sale's books for one campaign, from both sides: what Redis granted and what SQLite holds.
    /// After the claims stream drains, `persisted == granted` and `distinctUsers == persisted` when the
    /// per-user limit is 1.
    public struct Audit: Codable, Sendable, Hashable {
        public var campaignID: String
        public var stock: Int
        public var remaining: Int
        /// stock − remaining: claims Redis granted.
        public var granted: Int
        /// Claims stored in SQLite.
        public var persisted: Int
        public var distinctUsers: Int
        /// Riders holding more coupons of this campaign than the per-user limit (must be empty).
        public var overLimitUsers: [String]
        /// Claims on the stream not yet stored.
        public var pendingOnStream: Int

        public init(campaignID: String, stock: Int, remaining: Int, granted: Int, persisted: Int, distinctUsers: Int, overLimitUsers: [String], pendingOnStream: Int) {
            self.campaignID = campaignID
            self.stock = stock
            self.remaining = remaining
            self.granted = granted
            self.persisted = persisted
            self.distinctUsers = distinctUsers
            self.overLimitUsers = overLimitUsers
            self.pendingOnStream = pendingOnStream
        }
    }

    /// Payment takes a coupon for an order (service role). A repeat for the same order answers the same
    /// discount; a coupon redeemed for another order, or not the rider's, is refused.
    public struct RedeemRequest: Codable, Sendable, Hashable {
        public var userID: String
        public var orderID: String
        public var fareCents: Int
        /// The payment redeeming it: only that payment's failure gives the coupon back.
        public var paymentID: String?

        public init(userID: String, orderID: String, fareCents: Int, paymentID: String? = nil) {
            self.userID = userID
            self.orderID = orderID
            self.fareCents = fareCents
            self.paymentID = paymentID
        }
    }

    public struct Redemption: Codable, Sendable, Hashable {
        public var claimID: String
        public var orderID: String
        public var discountCents: Int

        public init(claimID: String, orderID: String, discountCents: Int) {
            self.claimID = claimID
            self.orderID = orderID
            self.discountCents = discountCents
        }
    }

    /// A failed payment gives its coupon back (service role); releasing a coupon not redeemed for that
    /// order changes nothing.
    public struct ReleaseRequest: Codable, Sendable, Hashable {
        public var orderID: String
        /// The failed payment: a coupon that a later payment of the same order redeemed again stays redeemed.
        public var paymentID: String?

        public init(orderID: String, paymentID: String? = nil) {
            self.orderID = orderID
            self.paymentID = paymentID
        }
    }

    public static let createCampaign = Endpoint<NewCampaign, Campaign>(
        service: service, .post, "/v1/campaigns", successStatus: .created)
    public static let campaigns = Endpoint<NoContent, CampaignList>(service: service, .get, "/v1/campaigns")
    public static let campaign = Endpoint<NoContent, Campaign>(service: service, .get, "/v1/campaigns/{id}")
    public static let claim = Endpoint<NoContent, Claim>(
        service: service, .post, "/v1/campaigns/{id}/claim", successStatus: .created)
    /// Pause or resume a campaign's claims (admin); repeating either changes nothing.
    public static let pause = Endpoint<NoContent, Campaign>(service: service, .post, "/v1/campaigns/{id}/pause", isIdempotent: true)
    public static let resume = Endpoint<NoContent, Campaign>(service: service, .post, "/v1/campaigns/{id}/resume", isIdempotent: true)
    public static let wallet = Endpoint<NoContent, Wallet>(service: service, .get, "/v1/wallet")
    public static let audit = Endpoint<NoContent, Audit>(service: service, .get, "/v1/campaigns/{id}/audit")
    public static let redeem = Endpoint<RedeemRequest, Redemption>(
        service: service, .post, "/v1/coupons/{id}/redeem", isIdempotent: true)
    public static let release = Endpoint<ReleaseRequest, Coupon>(
        service: service, .post, "/v1/coupons/{id}/release", isIdempotent: true)
}

public enum CouponEvents {
    /// A coupon was granted in the flash sale. Written to the stream by the same Lua script that took it
    /// from the stock, so the stream holds exactly the granted claims.
    public struct Claimed: DomainEvent, Hashable {
        public static let stream = "coupon.claims"
        public static let type = "coupon.claimed"
        public var claimID: String
        public var campaignID: String
        public var userID: String
        public var claimedAt: Double
        /// The rider's `Idempotency-Key`, kept so that a sale restored after Redis lost its data still
        /// answers a retried claim with the first grant.
        public var idempotencyKey: String?

        public init(claimID: String, campaignID: String, userID: String, claimedAt: Double, idempotencyKey: String? = nil) {
            self.claimID = claimID
            self.campaignID = campaignID
            self.userID = userID
            self.claimedAt = claimedAt
            self.idempotencyKey = idempotencyKey
        }
    }
}
