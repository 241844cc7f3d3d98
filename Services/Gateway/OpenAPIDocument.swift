import Foundation
import Contracts

/// The OpenAPI 3.1 description of Hailstorm's public API, served at `GET /api/v1/openapi.json`.
///
/// It is kept here, beside the routes it describes, as data: every operation with its roles, request and
/// response schemas, the problem answer every refusal is, the bearer scheme and the Idempotency-Key
/// headers. `GatewayTests` fails when a route of the gateway is missing from it or it names one the
/// gateway lacks; schemathesis checks real answers against it (scripts/fuzz.sh).
enum OpenAPIDocument {
    /// The document as JSON bytes (built once).
    static let json: Data = {
        do {
            return try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
        } catch {
            fatalError("the OpenAPI document is not JSON: \(error)")
        }
    }()

    /// Every operation as `METHOD /path` (path as in the document), for the route check.
    static var operations: Set<String> {
        var result: Set<String> = []
        for (path, item) in paths {
            for method in item.keys where method != "parameters" { result.insert("\(method.uppercased()) \(path)") }
        }
        return result
    }

    // MARK: The document

    static var document: [String: Any] {
        [
            "openapi": "3.1.0",
            "info": [
                "title": "Hailstorm",
                "version": "1.0.0",
                "description": """
                    The public API of Hailstorm, a ride-hailing and flash-sale platform, through its gateway. Every \
                    route but sign-up, sign-in, refresh and this document needs an access token (`Authorization: \
                    Bearer`); each lists the roles it serves. Every refusal is an `application/problem+json` \
                    document with a stable `type` (`urn:hailstorm:problem:<slug>`) and, for bad input, the `field`.
                    """,
            ],
            "servers": [["url": "/"]],
            "security": [["bearer": [String]()]],
            "paths": paths,
            "components": [
                "securitySchemes": [
                    "bearer": [
                        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                        "description": "An access token from sign-in (ES256, signed by the login service only).",
                    ]
                ],
                "schemas": schemas,
                "responses": [
                    "Problem": [
                        "description": "A refusal or failure, as RFC 9457 problem details.",
                        "content": ["application/problem+json": ["schema": ref("Problem")]],
                    ]
                ],
                "parameters": [
                    "Id": ["name": "id", "in": "path", "required": true, "schema": ["type": "string", "minLength": 1, "maxLength": 200]],
                    "IdempotencyKey": [
                        "name": "Idempotency-Key", "in": "header", "required": false,
                        "description": "Makes a retry safe: the same key answers the first result; with another body it is a 422.",
                        "schema": ["type": "string", "minLength": 1, "maxLength": 200],
                    ],
                    "RequiredIdempotencyKey": [
                        "name": "Idempotency-Key", "in": "header", "required": true,
                        "description": "Required: the same key answers the first result; with another body it is a 422.",
                        "schema": ["type": "string", "minLength": 1, "maxLength": 200],
                    ],
                ],
            ],
        ]
    }

    static var paths: [String: [String: Any]] {
        [
            // Accounts and sessions.
            "/api/v1/auth/signup": ["post": op(
                "Sign up as a rider or driver", roles: nil, body: "SignUpRequest", status: 201, response: "User")],
            "/api/v1/auth/login": ["post": op(
                "Sign in: an access token and a refresh token", roles: nil, body: "SignInRequest", response: "TokenPair")],
            "/api/v1/auth/refresh": ["post": op(
                "Exchange a refresh token for a new pair (a reused one ends the session)", roles: nil, body: "RefreshRequest",
                response: "TokenPair")],
            "/api/v1/auth/logout": ["post": op(
                "Sign out: the session's tokens are refused everywhere and its WebSockets closed", roles: ["rider", "driver", "admin"],
                body: "LogoutRequest", bodyRequired: false, status: 204)],
            "/api/v1/me": ["get": op("The signed-in account", roles: ["rider", "driver", "admin"], response: "User")],
            "/api/v1/ws/ticket": ["post": op(
                "A one-use ticket that opens the push WebSocket within a minute (GET /ws?ticket=)", roles: ["rider", "driver", "admin"],
                status: 201, response: "PushTicket")],
            "/api/v1/openapi.json": ["get": op("This document", roles: nil, response: nil, public: true, json: ["type": "object"])],

            // Rides.
            "/api/v1/rides/quote": ["post": op("A fare quote", roles: ["rider"], body: "QuoteRequest", response: "Quote")],
            "/api/v1/rides": [
                "post": op(
                    "Order a ride", roles: ["rider"], body: "NewOrder", status: 201, response: "Order", parameters: [ref(parameter: "IdempotencyKey")]),
                "get": op(
                    "The caller's rides, newest first", roles: ["rider", "driver"], response: "OrderPage",
                    parameters: [
                        query("cursor", ["type": "string", "maxLength": 200]),
                        query("limit", ["type": "integer", "minimum": 1, "maximum": 100]),
                    ]),
            ],
            "/api/v1/rides/{id}": ["get": op("One ride with its history", roles: ["rider", "driver", "admin"], response: "Order", id: true)],
            "/api/v1/rides/{id}/cancel": ["post": op(
                "Cancel a ride before it starts", roles: ["rider", "driver"], body: "CancelRequest", response: "Order", id: true)],
            "/api/v1/driver/online": ["post": op(
                "Go online (with a position, or the last one)", roles: ["driver"], body: "GoOnline", response: "DriverStatus")],
            "/api/v1/driver/offline": ["post": op("Go offline", roles: ["driver"], response: "DriverStatus")],
            "/api/v1/driver/locations": ["post": op(
                "Send GPS fixes (the latest counts)", roles: ["driver"], body: "Locations", response: "LocationsAccepted")],
            "/api/v1/driver/status": ["get": op("The driver's availability and position", roles: ["driver"], response: "DriverStatus")],
            "/api/v1/driver/offers/{id}/grab": ["post": op(
                "Grab an offered order: 200 won, 409 taken", roles: ["driver"], response: "Won", id: true)],
            "/api/v1/driver/rides/{id}/arrive": ["post": op("At the pickup", roles: ["driver"], response: "Order", id: true)],
            "/api/v1/driver/rides/{id}/start": ["post": op("The trip starts", roles: ["driver"], response: "Order", id: true)],
            "/api/v1/driver/rides/{id}/complete": ["post": op("The trip ends", roles: ["driver"], response: "Order", id: true)],
            "/api/v1/admin/surge": [
                "put": op("Set the surge factor of a pickup cell", roles: ["admin"], body: "SurgeSetting", response: "SurgeSetting"),
                "get": op("Every cell with a surge factor of its own, with its bounds", roles: ["admin"], response: "SurgeMap"),
            ],
            "/api/v1/admin/dispatch/drivers/{id}": ["get": op("One driver's state and position", roles: ["admin"], response: "DriverStatus", id: true)],
            "/api/v1/admin/dispatch/drivers/{id}/suspend": ["post": op(
                "Take a driver out of dispatch until restored (standing offers withdrawn, going online refused)", roles: ["admin"],
                response: "DriverStatus", id: true)],
            "/api/v1/admin/dispatch/drivers/{id}/restore": ["post": op(
                "Put a suspended driver back in dispatch", roles: ["admin"], response: "DriverStatus", id: true)],
            "/api/v1/admin/dispatch/waiting": ["get": op(
                "Orders waiting for a driver, the oldest first", roles: ["admin"], response: "WaitingOrders",
                parameters: [query("limit", ["type": "integer", "minimum": 1, "maximum": 5000])])],
            "/api/v1/admin/dispatch/drivers": ["get": op("Every driver online, with their state and last position", roles: ["admin"], response: "DriverList")],
            "/api/v1/admin/dispatch/stats": ["get": op("Dispatch figures", roles: ["admin"], response: "DispatchStats")],
            "/api/v1/admin/grabs/{id}": ["get": op("Every grab attempt on an order", roles: ["admin"], response: "GrabAudit", id: true)],

            // Coupons.
            "/api/v1/coupons/campaigns": ["get": op("Campaigns running now", roles: ["rider", "driver", "admin"], response: "CampaignList")],
            "/api/v1/coupons/campaigns/{id}": ["get": op("One campaign", roles: ["rider", "driver", "admin"], response: "Campaign", id: true)],
            "/api/v1/coupons/campaigns/{id}/claim": ["post": op(
                "Claim a coupon in a flash sale", roles: ["rider"], status: 201, response: "Claim", id: true,
                parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/coupons/wallet": ["get": op("The rider's coupons", roles: ["rider"], response: "Wallet")],
            "/api/v1/admin/coupons/campaigns": ["post": op(
                "Create a campaign", roles: ["admin"], body: "NewCampaign", status: 201, response: "Campaign",
                parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/coupons/campaigns/{id}/pause": ["post": op(
                "Pause a campaign's claims (409 campaign-paused until resumed)", roles: ["admin"], response: "Campaign", id: true)],
            "/api/v1/admin/coupons/campaigns/{id}/resume": ["post": op(
                "Resume a paused campaign's claims", roles: ["admin"], response: "Campaign", id: true)],
            "/api/v1/admin/coupons/campaigns/{id}/audit": ["get": op(
                "What Redis granted against what SQLite holds", roles: ["admin"], response: "CouponAudit", id: true)],

            // Money.
            "/api/v1/payments": ["post": op(
                "Pay a completed ride", roles: ["rider"], body: "PayRequest", status: 201, response: "Payment",
                parameters: [ref(parameter: "RequiredIdempotencyKey")])],
            "/api/v1/payments/{id}": ["get": op("One payment with its ledger entries", roles: ["rider", "driver", "admin"], response: "Payment", id: true)],
            "/api/v1/admin/payments/{id}/refund": ["post": op(
                "Refund a payment", roles: ["admin"], body: "RefundRequest", response: "Payment", id: true)],
            "/api/v1/admin/ledger": ["get": op(
                "The ledger's balances", roles: ["admin"], response: "Ledger", parameters: [query("account", ["type": "string", "maxLength": 200])])],
            "/api/v1/admin/settlements/run": ["post": op("Run a settlement batch now", roles: ["admin"], status: 201, response: "Batch")],
            "/api/v1/admin/settlements": ["get": op(
                "Settlement batches, newest first", roles: ["admin"], response: "BatchList",
                parameters: [query("limit", ["type": "integer", "minimum": 1, "maximum": 500])])],
            "/api/v1/admin/reconciliation": ["get": op("Orders, payments, ledger and payouts compared", roles: ["admin"], response: "Reconciliation")],

            // Ads.
            "/api/v1/ads": ["get": adServe],
            "/api/v1/ads/impressions": ["post": op(
                "Count an ad shown (each token once; a repeat answers duplicate)", roles: ["rider", "driver"], body: "AdToken",
                response: "AdCounted")],
            "/api/v1/ads/clicks": ["post": op(
                "Count an ad tapped (each token once)", roles: ["rider", "driver"], body: "AdToken", response: "AdCounted")],
            "/api/v1/admin/ads/campaigns": [
                "post": op(
                    "Create an ad campaign (a draft; resume starts it)", roles: ["admin"], body: "NewAdCampaign", status: 201,
                    response: "AdCampaign", parameters: [ref(parameter: "IdempotencyKey")]),
                "get": op("Every ad campaign", roles: ["admin"], response: "AdCampaignList"),
            ],
            "/api/v1/admin/ads/campaigns/{id}": ["get": op("One ad campaign with its spend", roles: ["admin"], response: "AdCampaign", id: true)],
            "/api/v1/admin/ads/campaigns/{id}/pause": ["post": op("Pause a running campaign", roles: ["admin"], response: "AdCampaign", id: true)],
            "/api/v1/admin/ads/campaigns/{id}/resume": ["post": op(
                "Start a draft or resume a paused campaign", roles: ["admin"], response: "AdCampaign", id: true)],
            "/api/v1/admin/ads/campaigns/{id}/end": ["post": op("End a campaign for good", roles: ["admin"], response: "AdCampaign", id: true)],
            "/api/v1/admin/ads/campaigns/{id}/report": ["get": op(
                "A campaign's figures per hour", roles: ["admin"], response: "AdReport", id: true)],

            // Analytics.
            "/api/v1/admin/analytics/kpis": ["get": op(
                "The platform's figures over a range and per minute or hour, for the platform, a city or a cell", roles: ["admin"],
                response: "AnalyticsKPIs", parameters: range + [
                    query("step", ["type": "string", "enum": ["minute", "hour"]]), query("city", ["type": "string"]),
                    query("cell", ["type": "string", "description": "A cell id as the heatmap names it (City:q:r)."]),
                ])],
            "/api/v1/admin/analytics/funnel": ["get": op(
                "Quotes, then the orders created in the range step by step through the state machine", roles: ["admin"],
                response: "AnalyticsFunnel", parameters: range + [query("city", ["type": "string"])])],
            "/api/v1/admin/analytics/heatmap": ["get": op(
                "Hexagonal cells with their value, as a GeoJSON FeatureCollection", roles: ["admin"], response: "AnalyticsHeatmap",
                parameters: [
                    ["name": "kind", "in": "query", "required": true, "schema": ["type": "string", "enum": ["pickups", "dropoffs", "supply", "demand"]]],
                    query("city", ["type": "string"]),
                ] + range)],
            "/api/v1/admin/analytics/trips/{id}/path": ["get": op(
                "A trip's driven and simplified path (GeoJSON), its metrics and flags", roles: ["admin"], response: "AnalyticsTripPath", id: true,
                parameters: [query("tolerance", ["type": "number", "minimum": 0.1, "maximum": 10_000, "description": "Metres (25)."])])],
            "/api/v1/admin/analytics/anomalies": ["get": op(
                "Flagged trips completed in the range", roles: ["admin"], response: "AnalyticsAnomalies", parameters: range)],
            "/api/v1/admin/analytics/od": ["get": op(
                "The busiest pickup → drop-off cell pairs", roles: ["admin"], response: "AnalyticsFlows",
                parameters: range + [query("top", ["type": "integer", "minimum": 1, "maximum": 1000])])],
            "/api/v1/admin/analytics/rebuild": ["post": op(
                "Empty analytics and read every stream again from its start", roles: ["admin"], response: "AnalyticsRebuilt")],

            // The command centre.
            "/api/v1/admin/command/board": ["get": op(
                "Every scraped instance with its health, requests, errors, p99 and restarts, from Prometheus", roles: ["admin"],
                response: "CommandBoard")],
            "/api/v1/admin/command/live": ["post": op(
                "Snapshots of the board, alerts, audit log, drivers and the last hour on the caller's WebSocket (/ws) every 2 s for 30 s",
                roles: ["admin"], response: "CommandLiveLease")],
            "/api/v1/admin/command/alerts": ["get": op(
                "The alerts book: firing alerts first, then the newest", roles: ["admin"], response: "CommandAlertList",
                parameters: [
                    query("state", ["type": "string", "enum": ["firing", "resolved", "all"]]),
                    query("limit", ["type": "integer", "minimum": 1, "maximum": 1000]),
                ])],
            "/api/v1/admin/command/alerts/{id}/acknowledge": ["post": op(
                "Acknowledge an alert (written to the audit log)", roles: ["admin"], response: "CommandAlert", id: true)],
            "/api/v1/admin/command/traces/{id}": ["get": op(
                "The lines every service kept for a sampled request (a traceparent with flags 01), by trace id or request id, in time order",
                roles: ["admin"], response: "CommandTrace", id: true)],
            "/api/v1/admin/command/audit": ["get": op(
                "The operators' actions, newest first, with the state before and after each", roles: ["admin"], response: "CommandAuditLog",
                parameters: [query("limit", ["type": "integer", "minimum": 1, "maximum": 1000])])],
            "/api/v1/admin/command/levers/ad-campaigns/{id}/pause": ["post": op(
                "Pause an ad campaign (audited)", roles: ["admin"], response: "CommandAuditEntry", id: true,
                parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/command/levers/ad-campaigns/{id}/resume": ["post": op(
                "Resume an ad campaign (audited)", roles: ["admin"], response: "CommandAuditEntry", id: true,
                parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/command/levers/coupon-campaigns/{id}/pause": ["post": op(
                "Pause a coupon campaign's claims (audited)", roles: ["admin"], response: "CommandAuditEntry", id: true,
                parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/command/levers/coupon-campaigns/{id}/resume": ["post": op(
                "Resume a coupon campaign's claims (audited)", roles: ["admin"], response: "CommandAuditEntry", id: true,
                parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/command/levers/drivers/{id}/suspend": ["post": op(
                "Suspend a driver from dispatch (audited)", roles: ["admin"], response: "CommandAuditEntry", id: true,
                parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/command/levers/drivers/{id}/restore": ["post": op(
                "Restore a suspended driver to dispatch (audited)", roles: ["admin"], response: "CommandAuditEntry", id: true,
                parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/command/levers/surge": ["put": op(
                "Set the surge factor of the cell holding a point (audited)", roles: ["admin"], body: "CommandSurgeLever",
                response: "CommandAuditEntry", parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/command/levers/broadcasts": ["post": op(
                "Push a message to every driver online within radiusKm of a point (audited)", roles: ["admin"], body: "CommandBroadcast",
                status: 201, response: "CommandAuditEntry", parameters: [ref(parameter: "IdempotencyKey")])],
            "/api/v1/admin/command/levers/settlement-batches": ["post": op(
                "Run a settlement batch now (audited)", roles: ["admin"], status: 201, response: "CommandAuditEntry",
                parameters: [ref(parameter: "IdempotencyKey")])],
        ]
    }

    /// `from` and `to` of an analytics query (seconds since 1970; by default the last hour).
    static var range: [[String: Any]] {
        let time: [String: Any] = ["type": "number", "minimum": 0, "maximum": 4_102_444_800, "description": "Seconds since 1970."]
        return [query("from", time), query("to", time)]
    }

    /// `GET /api/v1/ads`: an ad, or 204 when none fits (or the ad service does not answer in time).
    static var adServe: [String: Any] {
        var operation = op(
            "An ad for a placement at a position, or 204", roles: ["rider", "driver"], response: "Ad",
            parameters: [
                ["name": "placement", "in": "query", "required": true, "schema": ["type": "string", "enum": AdAPI.Placement.allCases.map(\.rawValue)]],
                ["name": "lat", "in": "query", "required": true, "schema": ["type": "number", "minimum": -90, "maximum": 90]],
                ["name": "lon", "in": "query", "required": true, "schema": ["type": "number", "minimum": -180, "maximum": 180]],
            ])
        var responses = operation["responses"] as? [String: Any] ?? [:]
        responses["204"] = ["description": "No ad fits, or none came in time: show nothing."]
        operation["responses"] = responses
        return operation
    }

    // MARK: Schemas (Contracts' types as they travel in JSON; optional fields are left out when empty)

    static var schemas: [String: Any] {
        let cents: [String: Any] = ["type": "integer"]
        let time: [String: Any] = ["type": "number", "description": "Seconds since 1970."]
        let text: [String: Any] = ["type": "string"]
        let states = ["created", "offered", "assigned", "arriving", "in_trip", "completed", "paid", "cancelled", "expired"]
        return [
            "Problem": object(
                ["type": text, "title": text, "status": ["type": "integer"], "detail": text, "field": text, "requestId": text],
                required: ["type", "title", "status"]),
            "Role": ["type": "string", "enum": ["rider", "driver", "admin", "service"]],
            "GeoPoint": object(
                ["lat": ["type": "number", "minimum": -90, "maximum": 90], "lon": ["type": "number", "minimum": -180, "maximum": 180]],
                required: ["lat", "lon"]),
            "SignUpRequest": object(
                [
                    "role": ["type": "string", "enum": ["rider", "driver"]],
                    "phone": ["type": "string", "description": "With its country code; E.164 (+ and 7 to 15 digits)."],
                    "password": ["type": "string", "minLength": 8], "name": ["type": "string", "minLength": 1, "maxLength": 100],
                ], required: ["role", "phone", "password", "name"]),
            "User": object(
                ["id": text, "role": ref("Role"), "phone": text, "name": text, "createdAt": time],
                required: ["id", "role", "phone", "name", "createdAt"]),
            "SignInRequest": object(["phone": text, "password": text], required: ["phone", "password"]),
            "TokenPair": object(
                ["accessToken": text, "refreshToken": text, "expiresIn": ["type": "integer"], "tokenType": text, "user": ref("User")],
                required: ["accessToken", "refreshToken", "expiresIn", "user"]),
            "RefreshRequest": object(["refreshToken": text], required: ["refreshToken"]),
            "LogoutRequest": object(["refreshToken": text], required: []),
            "PushTicket": object(["ticket": text, "expiresIn": ["type": "integer"]], required: ["ticket", "expiresIn"]),
            "QuoteRequest": object(["pickup": ref("GeoPoint"), "dropoff": ref("GeoPoint")], required: ["pickup", "dropoff"]),
            "Quote": object(
                [
                    "distanceKm": ["type": "number"], "baseFareCents": cents, "perKmCents": cents, "surge": ["type": "number"],
                    "fareCents": cents, "currency": text,
                ], required: ["distanceKm", "baseFareCents", "perKmCents", "surge", "fareCents", "currency"]),
            "NewOrder": object(
                ["pickup": ref("GeoPoint"), "dropoff": ref("GeoPoint"), "dispatch": ["type": "string", "enum": ["assign", "offer"]]],
                required: ["pickup", "dropoff"]),
            "Transition": object(
                [
                    "from": ["type": "string", "enum": states], "to": ["type": "string", "enum": states], "at": time, "actor": text,
                    "reason": text,
                ], required: ["to", "at", "actor"]),
            "Order": object(
                [
                    "id": text, "riderID": text, "driverID": text, "state": ["type": "string", "enum": states],
                    "pickup": ref("GeoPoint"), "dropoff": ref("GeoPoint"), "distanceKm": ["type": "number"], "fareCents": cents,
                    "surge": ["type": "number"], "currency": text, "createdAt": time, "updatedAt": time,
                    "history": ["type": "array", "items": ref("Transition")], "dispatch": ["type": "string", "enum": ["assign", "offer"]],
                ],
                required: [
                    "id", "riderID", "state", "pickup", "dropoff", "distanceKm", "fareCents", "surge", "currency", "createdAt",
                    "updatedAt", "history",
                ]),
            "OrderPage": object(["orders": ["type": "array", "items": ref("Order")], "nextCursor": text], required: ["orders"]),
            "CancelRequest": object(["reason": ["type": "string", "minLength": 1, "maxLength": 500]], required: ["reason"]),
            "GoOnline": object(
                ["lat": ["type": "number", "minimum": -90, "maximum": 90], "lon": ["type": "number", "minimum": -180, "maximum": 180]],
                required: []),
            "DriverStatus": object(
                ["driverID": text, "state": text, "lat": ["type": "number"], "lon": ["type": "number"]], required: ["driverID", "state"]),
            "LocationPoint": object(
                [
                    "lat": ["type": "number", "minimum": -90, "maximum": 90], "lon": ["type": "number", "minimum": -180, "maximum": 180],
                    "at": ["type": "number", "minimum": 0, "maximum": 4_102_444_800],
                ], required: ["lat", "lon"]),
            "Locations": object(
                ["points": ["type": "array", "items": ref("LocationPoint"), "minItems": 1, "maxItems": 1000]], required: ["points"]),
            "LocationsAccepted": object(["accepted": ["type": "integer"]], required: ["accepted"]),
            "Won": object(["orderID": text, "driverID": text, "at": time], required: ["orderID", "driverID", "at"]),
            "SurgeMap": object(
                [
                    "cellDegrees": ["type": "number"], "defaultFactor": ["type": "number"],
                    "cells": [
                        "type": "array",
                        "items": object(
                            [
                                "cell": text, "factor": ["type": "number"], "south": ["type": "number"], "west": ["type": "number"],
                                "north": ["type": "number"], "east": ["type": "number"],
                            ], required: ["cell", "factor", "south", "west", "north", "east"]),
                    ],
                ], required: ["cellDegrees", "defaultFactor", "cells"]),
            "WaitingOrders": object(
                [
                    "orders": [
                        "type": "array",
                        "items": object(
                            ["orderID": text, "pickup": ref("GeoPoint"), "createdAt": time, "state": ["type": "string", "enum": ["waiting", "offered"]]],
                            required: ["orderID", "pickup", "createdAt", "state"]),
                    ],
                    "total": ["type": "integer"],
                ], required: ["orders", "total"]),
            "SurgeSetting": object(
                ["at": ref("GeoPoint"), "factor": ["type": "number", "minimum": 1, "maximum": 10], "cell": text, "previous": ["type": "number"]],
                required: ["at", "factor"]),
            "DriverList": object(
                [
                    "drivers": [
                        "type": "array",
                        "items": object(
                            ["driverID": text, "state": ["type": "string", "enum": ["available", "busy", "offline", "suspended"]], "lat": ["type": "number"], "lon": ["type": "number"]],
                            required: ["driverID", "state"]),
                    ],
                ], required: ["drivers"]),
            "DispatchStats": object(
                [
                    "mode": text, "driversKnown": ["type": "integer"], "driversAvailable": ["type": "integer"],
                    "ordersWaiting": ["type": "integer"], "windows": ["type": "integer"], "assigned": ["type": "integer"],
                    "offered": ["type": "integer"], "deferred": ["type": "integer"], "meanPickupKm": ["type": "number"],
                ],
                required: ["mode", "driversKnown", "driversAvailable", "ordersWaiting", "windows", "assigned", "offered", "deferred"]),
            "GrabAudit": object(
                [
                    "orderID": text,
                    "attempts": [
                        "type": "array",
                        "items": object(["driverID": text, "outcome": text, "at": time], required: ["driverID", "outcome", "at"]),
                    ],
                ], required: ["orderID", "attempts"]),
            "NewCampaign": object(
                [
                    "name": ["type": "string", "minLength": 1], "city": ["type": "string", "minLength": 1],
                    "kind": ["type": "string", "enum": ["amount", "percent"]],
                    "amountOffCents": ["type": "integer", "minimum": 1, "maximum": 1_000_000],
                    "percentOff": ["type": "integer", "minimum": 1, "maximum": 100], "minimumFareCents": ["type": "integer", "minimum": 0],
                    "stock": ["type": "integer", "minimum": 1, "maximum": 10_000_000],
                    "perUserLimit": ["type": "integer", "minimum": 1, "maximum": 1000],
                    "startsAt": ["type": "number", "exclusiveMinimum": 0, "maximum": 4_102_444_800],
                    "endsAt": ["type": "number", "minimum": 0, "maximum": 4_102_444_800],
                ],
                required: ["name", "city", "kind", "minimumFareCents", "stock", "perUserLimit", "startsAt", "endsAt"]),
            "Campaign": object(
                [
                    "id": text, "name": text, "city": text, "kind": ["type": "string", "enum": ["amount", "percent"]],
                    "amountOffCents": cents, "percentOff": ["type": "integer"], "minimumFareCents": cents, "stock": ["type": "integer"],
                    "perUserLimit": ["type": "integer"], "startsAt": time, "endsAt": time, "createdAt": time,
                    "remaining": ["type": "integer"], "paused": ["type": "boolean"],
                ],
                required: ["id", "name", "city", "kind", "minimumFareCents", "stock", "perUserLimit", "startsAt", "endsAt", "createdAt", "paused"]),
            "CampaignList": object(["campaigns": ["type": "array", "items": ref("Campaign")]], required: ["campaigns"]),
            "Claim": object(
                ["claimID": text, "campaignID": text, "userID": text, "claimedAt": time],
                required: ["claimID", "campaignID", "userID", "claimedAt"]),
            "Wallet": object(
                [
                    "coupons": [
                        "type": "array",
                        "items": object(
                            ["claimID": text, "campaign": ref("Campaign"), "claimedAt": time, "state": text],
                            required: ["claimID", "campaign", "claimedAt", "state"]),
                    ]
                ], required: ["coupons"]),
            "CouponAudit": object(
                [
                    "campaignID": text, "stock": ["type": "integer"], "remaining": ["type": "integer"], "granted": ["type": "integer"],
                    "persisted": ["type": "integer"], "distinctUsers": ["type": "integer"],
                    "overLimitUsers": ["type": "array", "items": text], "pendingOnStream": ["type": "integer"],
                ],
                required: ["campaignID", "stock", "remaining", "granted", "persisted", "distinctUsers", "overLimitUsers", "pendingOnStream"]),
            "PayRequest": object(
                ["orderID": ["type": "string", "minLength": 1], "couponID": text, "paymentMethod": text], required: ["orderID"]),
            "LedgerEntry": object(
                ["id": text, "paymentID": text, "account": text, "amountCents": cents, "kind": text, "at": time],
                required: ["id", "paymentID", "account", "amountCents", "kind", "at"]),
            "Payment": object(
                [
                    "id": text, "orderID": text, "riderID": text, "driverID": text,
                    "state": ["type": "string", "enum": ["processing", "succeeded", "failed", "refunded"]], "fareCents": cents,
                    "discountCents": cents, "amountCents": cents, "commissionCents": cents, "couponID": text, "currency": text,
                    "providerReference": text, "failureReason": text, "createdAt": time, "updatedAt": time,
                    "entries": ["type": "array", "items": ref("LedgerEntry")],
                ],
                required: [
                    "id", "orderID", "riderID", "driverID", "state", "fareCents", "discountCents", "amountCents", "commissionCents",
                    "currency", "createdAt", "updatedAt", "entries",
                ]),
            "RefundRequest": object(["reason": ["type": "string", "minLength": 1]], required: ["reason"]),
            "Ledger": object(
                [
                    "totalCents": cents, "entries": ["type": "integer"], "payments": ["type": "integer"],
                    "accounts": [
                        "type": "array",
                        "items": object(["account": text, "balanceCents": cents], required: ["account", "balanceCents"]),
                    ],
                    "unbalancedPayments": ["type": "array", "items": text],
                ], required: ["totalCents", "entries", "payments", "accounts", "unbalancedPayments"]),
            "Batch": object(
                [
                    "id": text, "trigger": text, "startedAt": time, "entries": ["type": "integer"], "totalCents": cents,
                    "payouts": [
                        "type": "array",
                        "items": object(
                            ["batchID": text, "driverID": text, "amountCents": cents, "entries": ["type": "integer"]],
                            required: ["batchID", "driverID", "amountCents", "entries"]),
                    ],
                ], required: ["id", "trigger", "startedAt", "entries", "totalCents", "payouts"]),
            "BatchList": object(["batches": ["type": "array", "items": ref("Batch")]], required: ["batches"]),
            "AdToken": object(["token": ["type": "string", "minLength": 1, "maxLength": 2048]], required: ["token"]),
            "AnalyticsKPIs": object(
                [
                    "from": time, "to": time, "step": ["type": "string", "enum": ["minute", "hour"]], "city": text, "cell": text,
                    "total": ["type": "object"],
                    "steps": ["type": "array", "items": object(["start": time, "figures": ["type": "object"]], required: ["start", "figures"])],
                ], required: ["from", "to", "step", "total", "steps"]),
            "AnalyticsFunnel": object(
                [
                    "from": time, "to": time, "city": text,
                    "steps": ["type": "array", "items": object(
                        ["step": text, "count": ["type": "integer"], "dropOff": ["type": "number"]], required: ["step", "count"])],
                ], required: ["from", "to", "steps"]),
            "AnalyticsHeatmap": object(
                [
                    "type": ["const": "FeatureCollection"], "kind": text, "from": time, "to": time, "edgeMeters": ["type": "number"],
                    "features": ["type": "array", "items": ["type": "object"]],
                ], required: ["type", "kind", "from", "to", "edgeMeters", "features"]),
            "AnalyticsTripPath": object(
                ["type": ["const": "FeatureCollection"], "trip": ["type": "object"], "features": ["type": "array", "items": ["type": "object"]]],
                required: ["type", "trip", "features"]),
            "AnalyticsAnomalies": object(
                ["from": time, "to": time, "trips": ["type": "array", "items": ["type": "object"]]], required: ["from", "to", "trips"]),
            "AnalyticsFlows": object(
                ["from": time, "to": time, "flows": ["type": "array", "items": ["type": "object"]]], required: ["from", "to", "flows"]),
            "AnalyticsRebuilt": object(["events": ["type": "integer"], "seconds": ["type": "number"]], required: ["events", "seconds"]),
            "CommandAuditEntry": object(
                [
                    "id": ["type": "integer"], "at": time, "actor": text, "action": text, "target": text,
                    "before": ["type": "object", "additionalProperties": text], "after": ["type": "object", "additionalProperties": text],
                    "requestID": text,
                ], required: ["id", "at", "actor", "action", "target", "before", "after", "requestID"]),
            "CommandTrace": object(
                [
                    "id": text,
                    "lines": [
                        "type": "array",
                        "items": object(
                            [
                                "at": time, "service": text, "instance": text, "traceID": text, "requestID": text, "method": text, "path": text,
                                "status": ["type": "integer"], "milliseconds": ["type": "number"],
                            ], required: ["at", "service", "instance", "traceID", "requestID", "method", "path", "status", "milliseconds"]),
                    ],
                ], required: ["id", "lines"]),
            "CommandLiveLease": object(["everyMs": ["type": "integer"], "until": time], required: ["everyMs", "until"]),
            "CommandAuditLog": object(["entries": ["type": "array", "items": ref("CommandAuditEntry")]], required: ["entries"]),
            "CommandAlert": object(
                [
                    "id": text, "name": text, "source": text, "severity": text, "summary": text,
                    "labels": ["type": "object", "additionalProperties": text], "state": ["type": "string", "enum": ["firing", "resolved"]],
                    "firedAt": time, "resolvedAt": time, "acknowledgedAt": time, "acknowledgedBy": text,
                ], required: ["id", "name", "source", "severity", "summary", "labels", "state", "firedAt"]),
            "CommandAlertList": object(["alerts": ["type": "array", "items": ref("CommandAlert")], "checkedAt": time], required: ["alerts"]),
            "CommandBoard": object(
                [
                    "at": time, "prometheus": text,
                    "instances": [
                        "type": "array",
                        "items": object(
                            [
                                "service": text, "instance": text, "health": ["type": "string", "enum": ["up", "down"]], "lastScrape": time,
                                "lastError": text, "requestsPerSecond": ["type": "number"], "errorsPerSecond": ["type": "number"],
                                "p99Seconds": ["type": "number"], "restarts": ["type": "integer"],
                            ], required: ["service", "instance", "health"]),
                    ],
                ], required: ["at", "prometheus", "instances"]),
            "CommandBroadcast": object(
                [
                    "at": ref("GeoPoint"), "radiusKm": ["type": "number", "minimum": 0.1, "maximum": 50],
                    "text": ["type": "string", "minLength": 1, "maxLength": 500],
                ], required: ["at", "radiusKm", "text"]),
            "CommandSurgeLever": object(
                ["at": ref("GeoPoint"), "factor": ["type": "number", "minimum": 1, "maximum": 10]], required: ["at", "factor"]),
            "AdCounted": object(
                [
                    "outcome": ["type": "string", "enum": ["counted", "duplicate", "capped", "budget-exhausted"]], "campaignID": text,
                    "chargedMillicents": ["type": "integer"],
                ], required: ["outcome", "campaignID", "chargedMillicents"]),
            "AdCreative": object(
                [
                    "title": ["type": "string", "minLength": 1, "maxLength": 100], "text": ["type": "string", "minLength": 1, "maxLength": 500],
                    "couponCampaignID": text,
                ], required: ["title", "text"]),
            "Ad": object(
                [
                    "campaignID": text, "placement": text, "creative": ref("AdCreative"), "impressionToken": text, "clickToken": text,
                    "expiresAt": time,
                ], required: ["campaignID", "placement", "creative", "impressionToken", "clickToken", "expiresAt"]),
            "NewAdCampaign": object(
                [
                    "name": ["type": "string", "minLength": 1, "maxLength": 200], "advertiser": ["type": "string", "minLength": 1, "maxLength": 200],
                    "placements": [
                        "type": "array", "minItems": 1, "uniqueItems": true,
                        "items": ["type": "string", "enum": AdAPI.Placement.allCases.map(\.rawValue)],
                    ],
                    "creative": ref("AdCreative"),
                    "targeting": object(
                        [
                            "city": text,
                            "area": object(
                                [
                                    "lat": ["type": "number", "minimum": -90, "maximum": 90], "lon": ["type": "number", "minimum": -180, "maximum": 180],
                                    "radiusMeters": ["type": "number", "minimum": 1, "maximum": 500_000],
                                ], required: ["lat", "lon", "radiusMeters"]),
                            "hours": ["type": "array", "maxItems": 24, "items": ["type": "integer", "minimum": 0, "maximum": 23]],
                            "days": ["type": "array", "maxItems": 7, "items": ["type": "integer", "minimum": 1, "maximum": 7]],
                            "segment": ["type": "string", "enum": ["new", "frequent", "any"]],
                        ], required: ["city"]),
                    "pricing": ["type": "string", "enum": ["cpm", "cpc"]],
                    "bidCents": ["type": "integer", "minimum": 1, "maximum": 10_000_000],
                    "dailyBudgetCents": ["type": "integer", "minimum": 1, "maximum": 1_000_000_000_000],
                    "totalBudgetCents": ["type": "integer", "minimum": 1, "maximum": 1_000_000_000_000],
                    "frequencyCapPerDay": ["type": "integer", "minimum": 1, "maximum": 10_000],
                    "pacing": ["type": "string", "enum": ["even", "asap"]],
                    "startsAt": ["type": "number", "minimum": 0, "maximum": 4_102_444_800],
                    "endsAt": ["type": "number", "minimum": 0, "maximum": 4_102_444_800],
                ],
                required: [
                    "name", "advertiser", "placements", "creative", "targeting", "pricing", "bidCents", "dailyBudgetCents",
                    "totalBudgetCents", "frequencyCapPerDay", "startsAt", "endsAt",
                ]),
            "AdCampaign": object(
                [
                    "id": text, "state": ["type": "string", "enum": ["draft", "active", "paused", "ended", "exhausted"]],
                    "settings": ref("NewAdCampaign"), "createdAt": time, "spentMillicents": ["type": "integer"],
                    "spentTodayMillicents": ["type": "integer"], "passRate": ["type": "number"],
                ], required: ["id", "state", "settings", "createdAt"]),
            "AdCampaignList": object(["campaigns": ["type": "array", "items": ref("AdCampaign")]], required: ["campaigns"]),
            "AdReportHour": object(
                [
                    "hour": time, "requests": ["type": "integer"], "eligible": ["type": "integer"], "throttled": ["type": "integer"],
                    "capped": ["type": "integer"], "served": ["type": "integer"], "impressions": ["type": "integer"],
                    "clicks": ["type": "integer"], "clickRate": ["type": "number"], "conversions": ["type": "integer"],
                    "spentMillicents": ["type": "integer"], "duplicates": ["type": "integer"], "pacingIndex": ["type": "number"],
                ],
                required: [
                    "hour", "requests", "eligible", "throttled", "capped", "served", "impressions", "clicks", "clickRate", "conversions",
                    "spentMillicents", "duplicates",
                ]),
            "AdReport": object(
                [
                    "campaign": ref("AdCampaign"), "hours": ["type": "array", "items": ref("AdReportHour")], "totals": ref("AdReportHour"),
                    "pendingOnStream": ["type": "integer"],
                ], required: ["campaign", "hours", "totals", "pendingOnStream"]),
            "Reconciliation": object(
                [
                    "generatedAt": time, "completedOrders": ["type": "integer"], "payments": ["type": "integer"],
                    "ledgerTotalCents": cents, "driverEarningsCents": cents, "paidOutCents": cents, "unsettledCents": cents,
                    "mismatches": [
                        "type": "array",
                        "items": object(
                            ["kind": text, "orderID": text, "paymentID": text, "driverID": text, "detail": text], required: ["kind", "detail"]),
                    ],
                ],
                required: [
                    "generatedAt", "completedOrders", "payments", "ledgerTotalCents", "driverEarningsCents", "paidOutCents",
                    "unsettledCents", "mismatches",
                ]),
        ]
    }

    // MARK: Building blocks

    static func ref(_ schema: String) -> [String: Any] { ["$ref": "#/components/schemas/\(schema)"] }

    static func ref(parameter: String) -> [String: Any] { ["$ref": "#/components/parameters/\(parameter)"] }

    static func object(_ properties: [String: Any], required: [String]) -> [String: Any] {
        ["type": "object", "properties": properties, "required": required]
    }

    static func query(_ name: String, _ schema: [String: Any]) -> [String: Any] {
        ["name": name, "in": "query", "required": false, "schema": schema]
    }

    /// One operation: who may call it (nil: anyone), its body, its success status and answer; every other
    /// answer is a problem.
    static func op(
        _ summary: String, roles: [String]?, body: String? = nil, bodyRequired: Bool = true, status: Int = 200,
        response: String? = nil, id: Bool = false, parameters: [[String: Any]] = [], public isPublic: Bool = false,
        json: [String: Any]? = nil
    ) -> [String: Any] {
        var operation: [String: Any] = ["summary": summary]
        if let roles {
            operation["description"] = "Roles: \(roles.joined(separator: ", "))."
            operation["x-roles"] = roles
        } else {
            operation["security"] = [[String: Any]]()
        }
        var all = parameters
        if id { all.insert(ref(parameter: "Id"), at: 0) }
        if !all.isEmpty { operation["parameters"] = all }
        if let body {
            operation["requestBody"] = [
                "required": bodyRequired, "content": ["application/json": ["schema": ref(body)]],
            ]
        }
        var success: [String: Any] = ["description": status == 204 ? "Done; no content." : "Success."]
        if let response {
            success["content"] = ["application/json": ["schema": ref(response)]]
        } else if let json {
            success["content"] = ["application/json": ["schema": json]]
        }
        operation["responses"] = [String(status): success, "default": ["$ref": "#/components/responses/Problem"]]
        return operation
    }
}
