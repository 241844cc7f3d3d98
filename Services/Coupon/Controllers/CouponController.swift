import Contracts
import Foundation
import HailKit
import Hummingbird

/// The coupon service's HTTP API (`CouponAPI`).
struct CouponController: Sendable {
    let store: CouponStore
    let sale: FlashSale
    /// The shard of the campaigns this instance owns: its new campaigns' ids name it.
    let shard: Shard

    func register(on router: some RouterMethods<HailRequestContext>) {
        router.on(CouponAPI.createCampaign) { body, request, context in
            _ = try context.requireRole(.admin)
            try Self.validate(body)
            let candidate = CouponAPI.Campaign(
                id: shard.id(RandomID.uuid()), name: body.name, city: body.city, kind: body.kind,
                amountOffCents: body.kind == .amount ? body.amountOffCents : nil,
                percentOff: body.kind == .percent ? body.percentOff : nil,
                minimumFareCents: body.minimumFareCents, stock: body.stock, perUserLimit: body.perUserLimit,
                startsAt: body.startsAt, endsAt: body.endsAt, createdAt: Date().timeIntervalSince1970, remaining: nil)
            let campaign = try await store.create(candidate, idempotencyKey: try HailHeaders.idempotencyKey(in: request.headers))
            try await sale.open(campaign)
            context.logger.info("campaign created", metadata: ["campaign": "\(campaign.id)", "stock": "\(campaign.stock)"])
            var answer = campaign
            answer.remaining = try await sale.remaining(campaign.id)
            return answer
        }
        router.on(CouponAPI.campaigns) { _, _, context in
            _ = try context.requireIdentity()
            var campaigns = try await store.current(now: Date().timeIntervalSince1970)
            let remaining = try await sale.remaining(campaigns.map(\.id))
            for i in campaigns.indices { campaigns[i].remaining = remaining[i] }
            return CouponAPI.CampaignList(campaigns: campaigns)
        }
        router.on(CouponAPI.campaign) { _, _, context in
            _ = try context.requireIdentity()
            var campaign = try await campaign(context)
            campaign.remaining = try await sale.remaining(campaign.id)
            return campaign
        }
        router.on(CouponAPI.claim) { _, request, context in
            let rider = try context.requireRole(.rider)
            let id = try context.parameters.require("id")
            // An id naming no shard names no campaign; another shard's campaign claimed here would have its
            // claims stored apart from its books.
            guard let owner = Shards.shard(ofID: id, count: shard.count) else { throw Problem.notFound("No campaign \(id)") }
            guard owner == shard.index else {
                throw Problem.misdirected("Campaign \(id) is shard \(owner)'s; this instance owns shard \(shard.index) of \(shard.count)")
            }
            let key = try HailHeaders.idempotencyKey(in: request.headers)
            var outcome = try await sale.claim(campaign: id, user: rider.userID, idempotencyKey: key)
            if outcome == .unknownCampaign, let stored = try await store.campaign(id: id),
                stored.endsAt > Date().timeIntervalSince1970
            {
                // Stored but not in Redis: Redis lost its data. The sale comes back from the stored claims
                // before anyone claims again, so no rider gets past their limit and no coupon is sold twice.
                switch try await sale.restoreIfMissing(stored, store: store) {
                case .inProgress:
                    throw Problem.unavailable("The sale is being restored; try again in a moment", retryAfterSeconds: 1)
                case .restored(let claimed):
                    context.logger.notice("sale restored from the stored claims", metadata: ["campaign": "\(id)", "claimed": "\(claimed)"])
                case .present:
                    break
                }
                outcome = try await sale.claim(campaign: id, user: rider.userID, idempotencyKey: key)
            }
            switch outcome {
            case .granted(let claimID, let claimedAt):
                return CouponAPI.Claim(claimID: claimID, campaignID: id, userID: rider.userID, claimedAt: claimedAt)
            case .soldOut:
                throw Problem.conflict("sold-out", "Every coupon of this campaign has been claimed")
            case .limitReached:
                throw Problem.conflict("limit-reached", "You already hold as many coupons of this campaign as it allows")
            case .notStarted(let startsAt):
                throw Problem.conflict(
                    "not-started", "The sale opens at \(Date(timeIntervalSince1970: startsAt).ISO8601Format())")
            case .ended:
                throw Problem.conflict("ended", "The sale has ended")
            case .paused:
                throw Problem.conflict("campaign-paused", "The sale is paused; try again later")
            case .unknownCampaign:
                throw Problem.notFound("No campaign \(id)")
            case .restoring:
                throw Problem.unavailable(
                    "Part of the sale is being restored; repeat the claim with the same Idempotency-Key in a moment",
                    retryAfterSeconds: 1)
            }
        }
        router.on(CouponAPI.pause) { _, _, context in
            try await setPaused(true, context)
        }
        router.on(CouponAPI.resume) { _, _, context in
            try await setPaused(false, context)
        }
        router.on(CouponAPI.wallet) { _, _, context in
            let rider = try context.requireRole(.rider)
            return CouponAPI.Wallet(coupons: try await store.wallet(user: rider.userID))
        }
        router.on(CouponAPI.audit) { _, _, context in
            _ = try context.requireRole(.admin)
            let campaign = try await campaign(context)
            let remaining = try await sale.remaining(campaign.id) ?? campaign.stock
            let books = try await store.books(campaign: campaign.id, perUserLimit: campaign.perUserLimit)
            let granted = campaign.stock - remaining
            return CouponAPI.Audit(
                campaignID: campaign.id, stock: campaign.stock, remaining: remaining, granted: granted,
                persisted: books.persisted, distinctUsers: books.distinctUsers, overLimitUsers: books.overLimitUsers,
                pendingOnStream: max(granted - books.persisted, 0))
        }
    }

    /// Payment's side of a coupon: redeem it for an order, give it back when the payment failed.
    func registerRedemption(on router: some RouterMethods<HailRequestContext>) {
        router.on(CouponAPI.redeem) { body, _, context in
            _ = try context.requireRole(.service)
            let claim = try context.parameters.require("id")
            guard body.fareCents >= 0 else { throw Problem.invalidField("fareCents", "must not be negative") }
            guard !body.orderID.isEmpty, !body.userID.isEmpty else { throw Problem.invalidBody("orderID and userID are needed") }
            let redemption = try await store.redeem(claim: claim, body, now: Date().timeIntervalSince1970)
            context.logger.info("coupon redeemed", metadata: ["claim": "\(claim)", "order": "\(body.orderID)"])
            return redemption
        }
        router.on(CouponAPI.release) { body, _, context in
            _ = try context.requireRole(.service)
            let claim = try context.parameters.require("id")
            if try await store.release(claim: claim, order: body.orderID, payment: body.paymentID) {
                context.logger.info("coupon given back", metadata: ["claim": "\(claim)", "order": "\(body.orderID)"])
            }
            guard let coupon = try await store.coupon(claim: claim) else { throw Problem.notFound("No coupon \(claim)") }
            return coupon
        }
    }

    /// Pauses or resumes claims: SQLite first (what a restored sale is rebuilt from), then the sale's meta
    /// in Redis, which the claim script reads. Repeating either changes nothing.
    private func setPaused(_ paused: Bool, _ context: HailRequestContext) async throws -> CouponAPI.Campaign {
        _ = try context.requireRole(.admin)
        let id = try context.parameters.require("id")
        guard id.count <= 128 else { throw Problem.invalidField("id", "is not a campaign id") }
        guard let result = try await store.setPaused(paused, campaign: id) else { throw Problem.notFound("No campaign \(id)") }
        var stored = result.campaign
        // A pause and a resume racing may reach Redis in the other order than SQLite: what Redis got is
        // checked against SQLite, the record, until they agree.
        for _ in 0..<5 {
            _ = try await sale.setPaused(stored)
            guard let now = try await store.campaign(id: id), now.paused != stored.paused else { break }
            stored = now
        }
        if result.changed {
            context.logger.notice(paused ? "campaign paused" : "campaign resumed", metadata: ["campaign": "\(id)"])
        }
        var campaign = stored
        campaign.remaining = try await sale.remaining(campaign.id)
        return campaign
    }

    private func campaign(_ context: HailRequestContext) async throws -> CouponAPI.Campaign {
        let id = try context.parameters.require("id")
        guard let campaign = try await store.campaign(id: id) else { throw Problem.notFound("No campaign \(id)") }
        return campaign
    }

    static func validate(_ body: CouponAPI.NewCampaign) throws {
        if body.name.trimmingCharacters(in: .whitespaces).isEmpty || body.name.count > 200 {
            throw Problem.invalidField("name", "must be 1 to 200 characters")
        }
        if body.city.trimmingCharacters(in: .whitespaces).isEmpty || body.city.count > 100 {
            throw Problem.invalidField("city", "must be 1 to 100 characters")
        }
        switch body.kind {
        case .amount:
            guard let cents = body.amountOffCents, cents > 0, cents <= 1_000_000 else {
                throw Problem.invalidField("amountOffCents", "an amount campaign needs 1 to 1,000,000 cents off")
            }
        case .percent:
            guard let percent = body.percentOff, (1...100).contains(percent) else {
                throw Problem.invalidField("percentOff", "a percent campaign needs 1 to 100 percent off")
            }
        }
        guard body.minimumFareCents >= 0 else { throw Problem.invalidField("minimumFareCents", "must not be negative") }
        guard (1...10_000_000).contains(body.stock) else { throw Problem.invalidField("stock", "must be 1 to 10,000,000") }
        guard (1...1000).contains(body.perUserLimit) else {
            throw Problem.invalidField("perUserLimit", "must be 1 to 1000")
        }
        guard Bounds.isEpochSeconds(body.startsAt), body.startsAt > 0 else {
            throw Problem.invalidField("startsAt", "must be a time in seconds since 1970, before 2100")
        }
        guard Bounds.isEpochSeconds(body.endsAt) else {
            throw Problem.invalidField("endsAt", "must be a time in seconds since 1970, before 2100")
        }
        guard body.endsAt > body.startsAt else { throw Problem.invalidField("endsAt", "must be after startsAt") }
    }
}
