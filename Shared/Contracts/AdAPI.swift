import Foundation

/// The ad service: campaigns that advertisers run in the apps' ad slots, the ad served for a slot, and
/// the impressions and clicks counted (and charged) once each. Money is in cents; a spend can hold
/// fractions of a cent (a CPM impression costs bid ÷ 1000), so spends are also given in millicents.
public enum AdAPI {
    public static let service = "ad"

    /// The shard of a split ad service that owns `city`: its campaigns, their serving and their counts
    /// (serving an ad chooses among every campaign of the place's city, so a city is never split).
    /// Rendezvous hashing of the city's name, as every caller computes it.
    public static func shard(ofCity city: some StringProtocol, count: Int) -> Int {
        Shards.shard(forKey: city, count: count)
    }

    /// The campaign an impression or click token names, read without checking the token: where to send
    /// it. The ad service's owner of that campaign checks its signature. A token is
    /// base64url(`v1|kind|id|campaign|user|placement|expiresAt`) `.` base64url(HMAC); nil for anything
    /// else.
    public static func campaignID(ofToken token: some StringProtocol) -> String? {
        let token = Substring(token)
        guard token.utf8.count <= 2048, let dot = token.firstIndex(of: ".") else { return nil }
        var text = String(token[..<dot]).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        text += String(repeating: "=", count: (4 - text.utf8.count % 4) % 4)
        guard let payload = Data(base64Encoded: text) else { return nil }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
        guard fields.count == 7, fields[0] == "v1", !fields[3].isEmpty else { return nil }
        return String(fields[3])
    }

    /// Where in the apps an ad is shown.
    public enum Placement: String, Codable, Sendable, CaseIterable {
        /// A rider waiting for a driver.
        case riderWaiting = "rider.waiting"
        case riderInTrip = "rider.in_trip"
        case riderReceipt = "rider.receipt"
        /// A driver online without a trip.
        case driverIdle = "driver.idle"

        /// The role that sees this placement.
        public var audience: Role { self == .driverIdle ? .driver : .rider }
    }

    /// What the advertiser pays for.
    public enum Pricing: String, Codable, Sendable {
        /// Per thousand impressions: each impression costs `bidCents` ÷ 1000.
        case cpm
        /// Per click: each click costs `bidCents`.
        case cpc
    }

    /// Riders by how much they ride, from the trips they completed.
    public enum Segment: String, Codable, Sendable {
        /// Fewer completed trips than the service's `ad.segment.new.trips` (3).
        case new
        /// At least `ad.segment.frequent.trips` (10) completed trips.
        case frequent
        case any
    }

    /// How a campaign's daily budget is spent over the day.
    public enum Pacing: String, Codable, Sendable {
        /// Spread evenly over the day (or the campaign's window, when shorter): requests are throttled
        /// so that spend follows the even line.
        case even
        /// As fast as requests come, until the budget is gone.
        case asap
    }

    public enum State: String, Codable, Sendable {
        /// Created, not yet running (resume starts it).
        case draft
        case active
        case paused
        /// Its end passed, or an admin ended it.
        case ended
        /// Its total budget is spent.
        case exhausted
    }

    /// A circle on the map.
    public struct Area: Codable, Sendable, Hashable {
        public var lat: Double
        public var lon: Double
        public var radiusMeters: Double

        public init(lat: Double, lon: Double, radiusMeters: Double) {
            self.lat = lat
            self.lon = lon
            self.radiusMeters = radiusMeters
        }
    }

    /// Who sees a campaign. Hours and days are in the city's time zone.
    public struct Targeting: Codable, Sendable, Hashable {
        /// One of the cities the ad service knows (`ad.cities`).
        public var city: String
        /// Only requests from inside this circle; nil: the whole city.
        public var area: Area?
        /// Hours of the day (0–23) it runs; nil or empty: all day.
        public var hours: [Int]?
        /// Days of the week (1 = Monday … 7 = Sunday); nil or empty: every day.
        public var days: [Int]?
        /// Riders by trips completed; drivers always match `any`.
        public var segment: Segment?

        public init(city: String, area: Area? = nil, hours: [Int]? = nil, days: [Int]? = nil, segment: Segment? = nil) {
            self.city = city
            self.area = area
            self.hours = hours
            self.days = days
            self.segment = segment
        }
    }

    /// What the app shows.
    public struct Creative: Codable, Sendable, Hashable {
        public var title: String
        public var text: String
        /// A coupon campaign the ad promotes: a click leads the rider to claim it.
        public var couponCampaignID: String?

        public init(title: String, text: String, couponCampaignID: String? = nil) {
            self.title = title
            self.text = text
            self.couponCampaignID = couponCampaignID
        }
    }

    /// What an admin sends to create a campaign (with an Idempotency-Key). Times are seconds since 1970.
    public struct NewCampaign: Codable, Sendable, Hashable {
        public var name: String
        public var advertiser: String
        public var placements: [Placement]
        public var creative: Creative
        public var targeting: Targeting
        public var pricing: Pricing
        public var bidCents: Int
        public var dailyBudgetCents: Int
        public var totalBudgetCents: Int
        /// Impressions of this campaign one user may see a day (in the city's time zone).
        public var frequencyCapPerDay: Int
        public var pacing: Pacing?
        public var startsAt: Double
        public var endsAt: Double

        public init(
            name: String, advertiser: String, placements: [Placement], creative: Creative, targeting: Targeting,
            pricing: Pricing, bidCents: Int, dailyBudgetCents: Int, totalBudgetCents: Int, frequencyCapPerDay: Int,
            pacing: Pacing? = nil, startsAt: Double, endsAt: Double
        ) {
            self.name = name
            self.advertiser = advertiser
            self.placements = placements
            self.creative = creative
            self.targeting = targeting
            self.pricing = pricing
            self.bidCents = bidCents
            self.dailyBudgetCents = dailyBudgetCents
            self.totalBudgetCents = totalBudgetCents
            self.frequencyCapPerDay = frequencyCapPerDay
            self.pacing = pacing
            self.startsAt = startsAt
            self.endsAt = endsAt
        }
    }

    public struct Campaign: Codable, Sendable, Hashable {
        public var id: String
        public var state: State
        public var settings: NewCampaign
        public var createdAt: Double
        /// Spent so far, in millicents (1/1000 of a cent), as Redis's counters say.
        public var spentMillicents: Int?
        /// Spent today (in the city's time zone), in millicents.
        public var spentTodayMillicents: Int?
        /// The share of requests pacing lets through right now (1: none throttled).
        public var passRate: Double?

        public init(
            id: String, state: State, settings: NewCampaign, createdAt: Double, spentMillicents: Int? = nil,
            spentTodayMillicents: Int? = nil, passRate: Double? = nil
        ) {
            self.id = id
            self.state = state
            self.settings = settings
            self.createdAt = createdAt
            self.spentMillicents = spentMillicents
            self.spentTodayMillicents = spentTodayMillicents
            self.passRate = passRate
        }
    }

    public struct CampaignList: Codable, Sendable {
        public var campaigns: [Campaign]

        public init(campaigns: [Campaign]) {
            self.campaigns = campaigns
        }

        /// The lists of every shard of a split ad service as one, in the order one shard lists them
        /// (the oldest campaign first).
        public static func merged(_ lists: [CampaignList]) -> CampaignList {
            CampaignList(campaigns: lists.flatMap(\.campaigns).sorted { a, b in
                a.createdAt != b.createdAt ? a.createdAt < b.createdAt : a.id < b.id
            })
        }
    }

    /// The ad for one slot. The app sends `impressionToken` when it has shown the ad and `clickToken`
    /// when the user taps it; both are signed, bound to the user, and expire at `expiresAt`.
    public struct Ad: Codable, Sendable, Hashable {
        public var campaignID: String
        public var placement: Placement
        public var creative: Creative
        public var impressionToken: String
        public var clickToken: String
        public var expiresAt: Double

        public init(campaignID: String, placement: Placement, creative: Creative, impressionToken: String, clickToken: String, expiresAt: Double) {
            self.campaignID = campaignID
            self.placement = placement
            self.creative = creative
            self.impressionToken = impressionToken
            self.clickToken = clickToken
            self.expiresAt = expiresAt
        }
    }

    public struct TokenRequest: Codable, Sendable, Hashable {
        public var token: String

        public init(token: String) {
            self.token = token
        }
    }

    /// What counting a token did. Sending a token again answers `duplicate` and charges nothing.
    public struct Counted: Codable, Sendable, Hashable {
        /// `counted`, `duplicate`, `capped` (the user saw this campaign as often as it allows today),
        /// or `budget-exhausted` (not charged: the budget had no room for it).
        public var outcome: String
        public var campaignID: String
        public var chargedMillicents: Int

        public init(outcome: String, campaignID: String, chargedMillicents: Int) {
            self.outcome = outcome
            self.campaignID = campaignID
            self.chargedMillicents = chargedMillicents
        }
    }

    /// One hour of a campaign (its start in seconds since 1970).
    public struct ReportHour: Codable, Sendable, Hashable {
        public var hour: Double
        /// Ad requests for one of the campaign's placements in its city.
        public var requests: Int
        /// Of those, the ones its targeting, budget and cap allowed.
        public var eligible: Int
        /// Eligible requests pacing held back.
        public var throttled: Int
        /// Requests refused because the user reached the cap.
        public var capped: Int
        public var served: Int
        public var impressions: Int
        public var clicks: Int
        public var clickRate: Double
        /// Clicks followed within 30 minutes by a coupon claim or a ride by the same user (once per click).
        public var conversions: Int
        public var spentMillicents: Int
        /// Tokens sent again, counted and charged nothing (in the totals, Redis's count; per hour, the
        /// service's, stored every couple of seconds).
        public var duplicates: Int
        /// (share of the daily budget spent) ÷ (share of the day elapsed), at the hour's last pacing run.
        public var pacingIndex: Double?

        public init(
            hour: Double, requests: Int = 0, eligible: Int = 0, throttled: Int = 0, capped: Int = 0, served: Int = 0,
            impressions: Int = 0, clicks: Int = 0, clickRate: Double = 0, conversions: Int = 0, spentMillicents: Int = 0,
            duplicates: Int = 0, pacingIndex: Double? = nil
        ) {
            self.hour = hour
            self.requests = requests
            self.eligible = eligible
            self.throttled = throttled
            self.capped = capped
            self.served = served
            self.impressions = impressions
            self.clicks = clicks
            self.clickRate = clickRate
            self.conversions = conversions
            self.spentMillicents = spentMillicents
            self.duplicates = duplicates
            self.pacingIndex = pacingIndex
        }
    }

    public struct Report: Codable, Sendable {
        public var campaign: Campaign
        public var hours: [ReportHour]
        public var totals: ReportHour
        /// Impressions and clicks on the event stream not yet stored (the report follows once it is 0).
        public var pendingOnStream: Int

        public init(campaign: Campaign, hours: [ReportHour], totals: ReportHour, pendingOnStream: Int) {
            self.campaign = campaign
            self.hours = hours
            self.totals = totals
            self.pendingOnStream = pendingOnStream
        }
    }

    public static let createCampaign = Endpoint<NewCampaign, Campaign>(
        service: service, .post, "/v1/campaigns", successStatus: .created)
    public static let campaigns = Endpoint<NoContent, CampaignList>(service: service, .get, "/v1/campaigns")
    public static let campaign = Endpoint<NoContent, Campaign>(service: service, .get, "/v1/campaigns/{id}")
    public static let pause = Endpoint<NoContent, Campaign>(service: service, .post, "/v1/campaigns/{id}/pause", isIdempotent: true)
    public static let resume = Endpoint<NoContent, Campaign>(service: service, .post, "/v1/campaigns/{id}/resume", isIdempotent: true)
    public static let end = Endpoint<NoContent, Campaign>(service: service, .post, "/v1/campaigns/{id}/end", isIdempotent: true)
    public static let report = Endpoint<NoContent, Report>(service: service, .get, "/v1/campaigns/{id}/report")
    /// `?placement=&lat=&lon=`; 204 when no ad fits.
    public static let serve = Endpoint<NoContent, Ad>(service: service, .get, "/v1/ads")
    public static let impression = Endpoint<TokenRequest, Counted>(service: service, .post, "/v1/impressions", isIdempotent: true)
    public static let click = Endpoint<TokenRequest, Counted>(service: service, .post, "/v1/clicks", isIdempotent: true)
}

public enum AdEvents {
    /// An impression or a click counted (and charged) by the ad service's Redis script, which appends it
    /// to the stream in the same step: the stream holds exactly the counted ones.
    public struct Counted: DomainEvent, Hashable {
        public static let stream = "ad"
        /// The type of an impression; a click's is `clickType`.
        public static let type = "ad.impression"
        public static let clickType = "ad.click"
        /// The token's id: an impression or click is counted once per token.
        public var tokenID: String
        public var campaignID: String
        public var userID: String
        public var placement: String
        public var chargedMillicents: Int
        public var at: Double

        public init(tokenID: String, campaignID: String, userID: String, placement: String, chargedMillicents: Int, at: Double) {
            self.tokenID = tokenID
            self.campaignID = campaignID
            self.userID = userID
            self.placement = placement
            self.chargedMillicents = chargedMillicents
            self.at = at
        }
    }
}
