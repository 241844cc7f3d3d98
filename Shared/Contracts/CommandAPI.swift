import Foundation

/// The command centre: the operations room's view of the platform (every instance's health and RED
/// figures from Prometheus, the alerts book) and the operator's levers, each written to an audit log.
/// Admin only. Times are seconds since 1970.
public enum CommandAPI {
    public static let service = "command"

    /// One operator action as the audit log keeps it: who, what, on what, when, and the state before and
    /// after it, as the service that owns that state answered.
    public struct AuditEntry: Codable, Sendable, Hashable {
        public var id: Int
        public var at: Double
        /// The operator's user id.
        public var actor: String
        /// `ad-campaign.pause`, `ad-campaign.resume`, `surge.set`, `settlement.run`, `alert.acknowledge`.
        public var action: String
        /// What it acted on: a campaign id, a surge cell, a settlement batch, an alert id.
        public var target: String
        public var before: [String: String]
        public var after: [String: String]
        /// The request that made it (`hailstorm logs --trace` finds its lines in every service).
        public var requestID: String

        public init(
            id: Int, at: Double, actor: String, action: String, target: String, before: [String: String], after: [String: String],
            requestID: String
        ) {
            self.id = id
            self.at = at
            self.actor = actor
            self.action = action
            self.target = target
            self.before = before
            self.after = after
            self.requestID = requestID
        }
    }

    /// The newest entries first.
    public struct AuditLog: Codable, Sendable {
        public var entries: [AuditEntry]

        public init(entries: [AuditEntry]) {
            self.entries = entries
        }
    }

    /// One firing of an alert rule, from the moment the command centre saw it firing until it stopped.
    public struct Alert: Codable, Sendable, Hashable {
        public var id: String
        /// The rule (`HailstormInstanceDown`).
        public var name: String
        /// `prometheus`: a rule Prometheus evaluates.
        public var source: String
        public var severity: String
        public var summary: String
        public var labels: [String: String]
        /// `firing` or `resolved`.
        public var state: String
        public var firedAt: Double
        public var resolvedAt: Double?
        public var acknowledgedAt: Double?
        public var acknowledgedBy: String?

        public init(
            id: String, name: String, source: String, severity: String, summary: String, labels: [String: String], state: String,
            firedAt: Double, resolvedAt: Double?, acknowledgedAt: Double?, acknowledgedBy: String?
        ) {
            self.id = id
            self.name = name
            self.source = source
            self.severity = severity
            self.summary = summary
            self.labels = labels
            self.state = state
            self.firedAt = firedAt
            self.resolvedAt = resolvedAt
            self.acknowledgedAt = acknowledgedAt
            self.acknowledgedBy = acknowledgedBy
        }
    }

    /// Firing alerts first, then the newest.
    public struct AlertList: Codable, Sendable {
        public var alerts: [Alert]
        /// When Prometheus's alerts were last read, nil when they never were.
        public var checkedAt: Double?

        public init(alerts: [Alert], checkedAt: Double?) {
            self.alerts = alerts
            self.checkedAt = checkedAt
        }
    }

    /// One scraped instance on the service board.
    public struct BoardInstance: Codable, Sendable, Hashable {
        /// The service (Prometheus's `job`).
        public var service: String
        /// The instance (`order-1` in the local run; the pod or container address elsewhere).
        public var instance: String
        /// `up` or `down`, as Prometheus's last scrape found it.
        public var health: String
        public var lastScrape: Double?
        public var lastError: String?
        /// Requests per second over the last minute, the probes left out.
        public var requestsPerSecond: Double?
        /// 5xx answers per second over the last minute.
        public var errorsPerSecond: Double?
        /// The 99th percentile of its answers' durations over the last minute.
        public var p99Seconds: Double?
        /// Restarts in the last hour, counted as resets of its request counter.
        public var restarts: Int?

        public init(
            service: String, instance: String, health: String, lastScrape: Double?, lastError: String?, requestsPerSecond: Double?,
            errorsPerSecond: Double?, p99Seconds: Double?, restarts: Int?
        ) {
            self.service = service
            self.instance = instance
            self.health = health
            self.lastScrape = lastScrape
            self.lastError = lastError
            self.requestsPerSecond = requestsPerSecond
            self.errorsPerSecond = errorsPerSecond
            self.p99Seconds = p99Seconds
            self.restarts = restarts
        }
    }

    public struct Board: Codable, Sendable {
        public var at: Double
        /// The Prometheus it was read from, or `not configured` (then `instances` is empty).
        public var prometheus: String
        /// Sorted by service, then instance.
        public var instances: [BoardInstance]

        public init(at: Double, prometheus: String, instances: [BoardInstance]) {
            self.at = at
            self.prometheus = prometheus
            self.instances = instances
        }
    }

    /// A message to every driver online within `radiusKm` of `at`, pushed over the gateway's WebSocket as
    /// `BroadcastMessage`.
    public struct Broadcast: Codable, Sendable, Hashable {
        public var at: GeoPoint
        public var radiusKm: Double
        public var text: String

        public init(at: GeoPoint, radiusKm: Double, text: String) {
            self.at = at
            self.radiusKm = radiusKm
            self.text = text
        }
    }

    /// What a driver's WebSocket receives for a broadcast.
    public struct BroadcastMessage: Codable, Sendable, Hashable {
        /// `command.broadcast`.
        public var type: String
        public var text: String
        public var at: Double

        public init(text: String, at: Double) {
            self.type = "command.broadcast"
            self.text = text
            self.at = at
        }
    }

    /// The lines of one trace or request, in the order the services received it.
    public struct Trace: Codable, Sendable {
        /// The trace id or request id asked for.
        public var id: String
        public var lines: [TraceLine]

        public init(id: String, lines: [TraceLine]) {
            self.id = id
            self.lines = lines
        }
    }

    /// A surge factor for the cell holding `at` (the order service's cells).
    public struct SurgeLever: Codable, Sendable, Hashable {
        public var at: GeoPoint
        public var factor: Double

        public init(at: GeoPoint, factor: Double) {
            self.at = at
            self.factor = factor
        }
    }

    /// What `POST …/live` answers: the caller's WebSocket (`/ws`) gets a `Snapshot` every `everyMs`
    /// until `until`; the page asks again before then to keep them coming.
    public struct LiveLease: Codable, Sendable, Hashable {
        public var everyMs: Int
        public var until: Double

        public init(everyMs: Int, until: Double) {
            self.everyMs = everyMs
            self.until = until
        }
    }

    /// Everything the command centre's page shows, pushed over the gateway's WebSocket. A part that could
    /// not be read is absent, with the reason in `unavailable`.
    public struct Snapshot: Codable, Sendable {
        /// `command.snapshot`.
        public var type: String
        public var at: Double
        public var board: Board?
        /// Firing alerts first, then the newest.
        public var alerts: [Alert]
        /// The newest operator actions.
        public var audit: [AuditEntry]
        /// Every driver online, with their state and last position.
        public var drivers: [MatchingAPI.DriverStatus]?
        /// The platform's figures over the last hour, per minute.
        public var kpis: AnalyticsAPI.KPIs?
        /// The cells with a surge factor of their own (order's).
        public var surge: OrderAPI.SurgeMap?
        /// Orders waiting for a driver (matching's), the oldest first.
        public var waiting: MatchingAPI.WaitingOrders?
        /// Trips analytics flagged in the last hour, each with its driven path.
        public var flagged: [FlaggedTrip]?
        /// Why a part is missing, by part (`board`, `drivers`, `kpis`, `surge`, `waiting`, `flagged`).
        public var unavailable: [String: String]

        public init(
            at: Double, board: Board?, alerts: [Alert], audit: [AuditEntry], drivers: [MatchingAPI.DriverStatus]?,
            kpis: AnalyticsAPI.KPIs?, surge: OrderAPI.SurgeMap? = nil, waiting: MatchingAPI.WaitingOrders? = nil,
            flagged: [FlaggedTrip]? = nil, unavailable: [String: String]
        ) {
            self.type = "command.snapshot"
            self.at = at
            self.board = board
            self.alerts = alerts
            self.audit = audit
            self.drivers = drivers
            self.kpis = kpis
            self.surge = surge
            self.waiting = waiting
            self.flagged = flagged
            self.unavailable = unavailable
        }
    }

    /// A trip analytics flagged, with the line its driver drove (`[lat, lon]` pairs, simplified).
    public struct FlaggedTrip: Codable, Sendable, Hashable {
        public var orderID: String
        public var driverID: String?
        public var flags: [String]
        public var completedAt: Double?
        public var path: [[Double]]

        public init(orderID: String, driverID: String?, flags: [String], completedAt: Double?, path: [[Double]]) {
            self.orderID = orderID
            self.driverID = driverID
            self.flags = flags
            self.completedAt = completedAt
            self.path = path
        }
    }

    /// Asks for snapshots on the caller's WebSocket for the next 30 s.
    public static let live = Endpoint<NoContent, LiveLease>(service: service, .post, "/v1/live", isIdempotent: true)
    /// A trace id (32 hex digits) or request id: the lines every service kept for it (sampled requests only).
    public static let trace = Endpoint<NoContent, Trace>(service: service, .get, "/v1/traces/{id}")
    public static let board = Endpoint<NoContent, Board>(service: service, .get, "/v1/board")
    /// `?state=firing|resolved|all` (all).
    public static let alerts = Endpoint<NoContent, AlertList>(service: service, .get, "/v1/alerts")
    public static let acknowledge = Endpoint<NoContent, Alert>(service: service, .post, "/v1/alerts/{id}/acknowledge", isIdempotent: true)
    /// `?limit=` (100, at most 1000).
    public static let audit = Endpoint<NoContent, AuditLog>(service: service, .get, "/v1/audit")
    public static let pauseAdCampaign = Endpoint<NoContent, AuditEntry>(
        service: service, .post, "/v1/levers/ad-campaigns/{id}/pause", isIdempotent: true)
    public static let resumeAdCampaign = Endpoint<NoContent, AuditEntry>(
        service: service, .post, "/v1/levers/ad-campaigns/{id}/resume", isIdempotent: true)
    public static let pauseCouponCampaign = Endpoint<NoContent, AuditEntry>(
        service: service, .post, "/v1/levers/coupon-campaigns/{id}/pause", isIdempotent: true)
    public static let resumeCouponCampaign = Endpoint<NoContent, AuditEntry>(
        service: service, .post, "/v1/levers/coupon-campaigns/{id}/resume", isIdempotent: true)
    /// Takes a driver out of dispatch until restored (matching's suspension).
    public static let suspendDriver = Endpoint<NoContent, AuditEntry>(
        service: service, .post, "/v1/levers/drivers/{id}/suspend", isIdempotent: true)
    public static let restoreDriver = Endpoint<NoContent, AuditEntry>(
        service: service, .post, "/v1/levers/drivers/{id}/restore", isIdempotent: true)
    public static let setSurge = Endpoint<SurgeLever, AuditEntry>(service: service, .put, "/v1/levers/surge")
    /// A message to the drivers online in an area; send an `Idempotency-Key` to make a retry safe.
    public static let broadcast = Endpoint<Broadcast, AuditEntry>(service: service, .post, "/v1/levers/broadcasts", successStatus: .created)
    /// A settlement batch now; send an `Idempotency-Key` to make a retry safe.
    public static let runSettlement = Endpoint<NoContent, AuditEntry>(
        service: service, .post, "/v1/levers/settlement-batches", successStatus: .created)
}

/// One service's answer to one request of a sampled trace, as the command centre's trace view shows it.
public struct TraceLine: Codable, Sendable, Hashable {
    /// When the service received the request (seconds since 1970).
    public var at: Double
    public var service: String
    public var instance: String
    public var traceID: String
    public var requestID: String
    public var method: String
    public var path: String
    public var status: Int
    public var milliseconds: Double

    public init(
        at: Double, service: String, instance: String, traceID: String, requestID: String, method: String, path: String, status: Int,
        milliseconds: Double
    ) {
        self.at = at
        self.service = service
        self.instance = instance
        self.traceID = traceID
        self.requestID = requestID
        self.method = method
        self.path = path
        self.status = status
        self.milliseconds = milliseconds
    }
}
