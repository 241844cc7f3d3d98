import Contracts
import Crypto
import Foundation
import HailKit

/// The impression and click tokens handed out with an ad: what was served, to whom, until when, signed
/// with the ad service's key (HMAC-SHA256), so an app can only count what it was actually shown, only
/// for its own user, and only for a while. A token's id makes it count once.
///
/// Wire form: base64url(`v1|kind|id|campaign|user|placement|expiresAt`) `.` base64url(HMAC).
struct AdTokens: Sendable {
    enum Kind: String, Sendable {
        case impression = "i"
        case click = "c"
    }

    struct Claims: Sendable, Equatable {
        var kind: Kind
        var id: String
        var campaignID: String
        var userID: String
        var placement: AdAPI.Placement
        var expiresAt: Double
    }

    private let key: SymmetricKey

    init(key: [UInt8]) {
        self.key = SymmetricKey(data: key)
    }

    func sign(_ claims: Claims) -> String {
        let payload = Array(
            ["v1", claims.kind.rawValue, claims.id, claims.campaignID, claims.userID, claims.placement.rawValue,
             String(Int(saturating: claims.expiresAt))].joined(separator: "|").utf8)
        let mac = HMAC<SHA256>.authenticationCode(for: payload, using: key)
        return Data(payload).base64URLEncoded + "." + Data(mac).base64URLEncoded
    }

    /// The claims of a token this service signed, of `kind`, for `userID`, not expired at `now`; a 400
    /// problem naming what is wrong otherwise.
    func verify(_ token: String, kind: Kind, userID: String, now: Double) throws -> Claims {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard token.utf8.count <= 2048, parts.count == 2, let payload = Data(base64URL: parts[0]),
            let mac = Data(base64URL: parts[1]),
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: payload, using: key)
        else { throw Self.invalid("The token was not issued by the ad service") }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 7, fields[0] == "v1", let tokenKind = Kind(rawValue: fields[1]),
            let placement = AdAPI.Placement(rawValue: fields[5]), let expiresAt = Double(fields[6])
        else { throw Self.invalid("The token is not an ad token") }
        guard tokenKind == kind else {
            throw Self.invalid(kind == .impression ? "This is a click token; send it to /ads/clicks" : "This is an impression token; send it to /ads/impressions")
        }
        guard fields[4] == userID else { throw Self.invalid("The token was issued to another user") }
        guard expiresAt > now else {
            throw Problem(.badRequest, slug: "ad-token-expired", title: "The ad token has expired", detail: "Ask for a new ad", field: "token")
        }
        return Claims(kind: tokenKind, id: fields[2], campaignID: fields[3], userID: fields[4], placement: placement, expiresAt: expiresAt)
    }

    private static func invalid(_ detail: String) -> Problem {
        Problem(.badRequest, slug: "invalid-ad-token", title: "The ad token is not valid", detail: detail, field: "token")
    }
}
