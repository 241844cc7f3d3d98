import Contracts
import Crypto
import EventBus
import Foundation
import HailKit
import HummingbirdBcrypt
import Logging
import NIOPosix
import RedisKit

/// The rules of accounts and sessions, callable without a server.
struct Accounts: Sendable {
    let store: UserStore
    let redis: RedisClient
    let tokens: AccessTokens
    let accessTTL: Duration
    let refreshTTL: Duration
    let bcryptCost: UInt8
    /// A hash of the configured cost for a password nobody has: a sign-in for an unknown phone verifies
    /// against it, so it takes as long as one for a known phone (`decoyHash(cost:)`).
    let decoyHash: String
    /// Failed sign-ins per phone number.
    let throttle: FailureThrottle
    let wakeups: OutboxWakeups
    let logger: Logger

    // MARK: Validation

    static func validate(_ request: LoginAPI.SignUpRequest) throws {
        guard request.role == .rider || request.role == .driver else {
            throw Problem.forbidden("Only riders and drivers sign up; an operator creates \(request.role.rawValue) accounts")
        }
        _ = try normalizedPhone(request.phone)
        guard request.password.count >= 8 else {
            throw Problem.invalidField("password", "Use at least 8 characters")
        }
        guard request.password.utf8.count <= 72 else {
            throw Problem.invalidField("password", "Use at most 72 bytes (bcrypt ignores the rest)")
        }
        try validateName(request.name)
    }

    /// A name people can read: 1 to 100 characters, none of them control or invisible formatting
    /// characters (bidirectional overrides, zero-width joiners), which could make a name display as
    /// something it is not.
    static func validateName(_ raw: String) throws {
        let name = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.count <= 100 else {
            throw Problem.invalidField("name", "Give a name of 1 to 100 characters")
        }
        let hidden = name.unicodeScalars.contains { scalar in
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .privateUse, .surrogate, .unassigned: true
            default: false
            }
        }
        guard !hidden else {
            throw Problem.invalidField("name", "A name cannot hold control, bidirectional or other invisible characters")
        }
    }

    /// The E.164 form of a phone number (`+` and 7 to 15 digits), so one number is one account however it
    /// is typed: spaces, dashes, dots and parentheses are dropped, and a number without `+` is read as
    /// already carrying its country code (`15550123457` is `+15550123457`).
    static func normalizedPhone(_ phone: String) throws -> String {
        let kept = phone.filter { !" -.()\u{A0}".contains($0) }
        let digits = kept.hasPrefix("+") ? kept.dropFirst() : Substring(kept)
        guard (7...15).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }), digits.first != "0" else {
            throw Problem.invalidField("phone", "A phone number is 7 to 15 digits with its country code, optionally after a +")
        }
        return "+" + digits
    }

    // MARK: Operations

    func signUp(_ request: LoginAPI.SignUpRequest) async throws -> LoginAPI.User {
        try Self.validate(request)
        return try await createAccount(role: request.role, phone: request.phone, password: request.password, name: request.name)
    }

    /// Creates an account of any role (admin included: operators seed it from configuration).
    func createAccount(role: Role, phone: String, password: String, name: String) async throws -> LoginAPI.User {
        let phone = try Self.normalizedPhone(phone)
        let hash = try await hashPassword(password)
        let user = LoginAPI.User(
            id: RandomID.uuid(), role: role, phone: phone,
            name: name.trimmingCharacters(in: .whitespacesAndNewlines), createdAt: Date().timeIntervalSince1970)
        guard let created = try await store.create(user, passwordHash: hash) else {
            throw Problem.conflict("phone-taken", "An account with this phone number exists", field: "phone")
        }
        wakeups.notify()
        logger.info("account created", metadata: ["user": "\(created.id)", "role": "\(created.role.rawValue)"])
        return created
    }

    func signIn(_ request: LoginAPI.SignInRequest) async throws -> LoginAPI.TokenPair {
        // A phone that is not a phone number cannot have an account; it is refused like a wrong password.
        let phone = (try? Self.normalizedPhone(request.phone)) ?? request.phone
        try await throttle.check(phone)
        let stored = try await store.user(phone: phone)
        // The same bcrypt work for unknown phones, so timing does not tell which numbers have accounts.
        let hash = stored?.passwordHash ?? decoyHash
        let matches = try await verifyPassword(request.password, hash: hash)
        guard let stored, matches else {
            try await throttle.failed(phone)
            throw Problem(
                .unauthorized, slug: "invalid-credentials", title: "Sign-in failed",
                detail: "The phone number or password is wrong")
        }
        return try await issue(for: stored.user, familyID: RandomID.uuid(), newSession: true)
    }

    func refresh(_ request: LoginAPI.RefreshRequest) async throws -> LoginAPI.TokenPair {
        let successor = Self.newRefreshToken()
        let outcome = try await store.rotate(
            hash: Self.digest(request.refreshToken), successorHash: Self.digest(successor),
            successorExpiresAt: Date().addingTimeInterval(Double(refreshTTL.components.seconds)))
        switch outcome {
        case .rotated(let userID, let familyID):
            guard try await redis.exists(Self.sessionKey(familyID)) else {
                throw Self.refreshRefused("The session has ended; sign in again")
            }
            guard let user = try await store.user(id: userID) else {
                throw Self.refreshRefused("The account no longer exists")
            }
            return try await issue(for: user, familyID: familyID, newSession: false, refreshToken: successor)
        case .unknown:
            throw Self.refreshRefused("The refresh token is not known")
        case .expired:
            throw Self.refreshRefused("The refresh token has expired; sign in again")
        case .revoked:
            throw Self.refreshRefused("The refresh token was revoked; sign in again")
        case .reused(let userID, let familyID):
            try await redis.delete(Self.sessionKey(familyID))
            try await endSession(user: userID, sessionID: familyID)
            logger.warning("refresh token reused; session revoked", metadata: ["family": "\(familyID)"])
            throw Self.refreshRefused("The refresh token was already used; the session is revoked, sign in again")
        }
    }

    /// Ends a session: the refresh token's family is revoked, every access token of the session (and the
    /// one presented) is denied until it would have expired, and the session's WebSockets are closed.
    func logout(_ request: LoginAPI.LogoutRequest) async throws {
        var ended: (user: String, session: String)? = nil
        if let refreshToken = request.refreshToken,
            let (userID, familyID) = try await store.revokeFamily(ofTokenHash: Self.digest(refreshToken))
        {
            try await redis.delete(Self.sessionKey(familyID))
            ended = (userID, familyID)
        }
        if let accessToken = request.accessToken {
            let claims = try tokens.verify(accessToken)
            let remaining = claims.exp.value.timeIntervalSinceNow
            if remaining > 0 {
                try await redis.set(
                    AccessTokens.denyListKey(tokenID: claims.jti.value), to: "1",
                    expiresIn: .milliseconds(Int(saturating: remaining * 1000) + 1000))
            }
            if let session = claims.sid, ended == nil {
                try await redis.delete(Self.sessionKey(session))
                _ = try await store.revokeFamily(id: session)
                ended = (claims.sub.value, session)
            } else if ended == nil {
                try await publish(SessionRevocation(userID: claims.sub.value, sessionID: nil, tokenID: claims.jti.value))
            }
        }
        if let ended { try await endSession(user: ended.user, sessionID: ended.session) }
    }

    /// Denies every access token of the session until the longest-lived could expire, and tells the
    /// gateways to close its WebSockets.
    private func endSession(user: String, sessionID: String) async throws {
        try await redis.set(
            AccessTokens.sessionDenyListKey(sessionID: sessionID), to: "1", expiresIn: accessTTL + .seconds(1))
        try await publish(SessionRevocation(userID: user, sessionID: sessionID, tokenID: nil))
    }

    private func publish(_ revocation: SessionRevocation) async throws {
        let message = String(decoding: try JSONBody.encoder.encode(revocation), as: UTF8.self)
        _ = try await redis.send(RedisCommand("PUBLISH", SessionRevocation.channel, message))
    }

    // MARK: Tokens

    private func issue(
        for user: LoginAPI.User, familyID: String, newSession: Bool, refreshToken: String? = nil
    ) async throws -> LoginAPI.TokenPair {
        let now = Date()
        let claims = AccessTokenClaims(
            userID: user.id, role: user.role, tokenID: RandomID.uuid(), issuedAt: now,
            expiresAt: now.addingTimeInterval(Double(accessTTL.components.seconds)), sessionID: familyID)
        let access = try await tokens.sign(claims)
        let refresh: String
        if let refreshToken {
            refresh = refreshToken
        } else {
            refresh = Self.newRefreshToken()
            try await store.saveRefreshToken(
                hash: Self.digest(refresh), userID: user.id, familyID: familyID,
                expiresAt: now.addingTimeInterval(Double(refreshTTL.components.seconds)))
        }
        if newSession {
            try await redis.set(Self.sessionKey(familyID), to: user.id, expiresIn: refreshTTL)
        } else {
            try await redis.expire(Self.sessionKey(familyID), in: refreshTTL)
        }
        return LoginAPI.TokenPair(
            accessToken: access, refreshToken: refresh, expiresIn: Int(accessTTL.components.seconds), user: user)
    }

    static func refreshRefused(_ detail: String) -> Problem {
        Problem(.unauthorized, slug: "invalid-refresh-token", title: "The refresh token cannot be used", detail: detail)
    }

    /// Session of a refresh-token family: exists while the session is alive.
    static func sessionKey(_ familyID: String) -> String { "login:session:\(familyID)" }

    static func newRefreshToken() -> String {
        let bytes = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }
        return bytes.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Refresh tokens are stored as SHA-256 digests: a leaked database holds no usable token.
    static func digest(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// A hash at `cost` of a random password nobody knows (`decoyHash`).
    static func decoyHash(cost: UInt8) -> String {
        Bcrypt.hash(RandomID.uuid(), cost: cost)
    }

    // bcrypt is deliberately slow: it runs on the NIO thread pool, never on the cooperative threads.
    private func hashPassword(_ password: String) async throws -> String {
        let cost = bcryptCost
        return try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    private func verifyPassword(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }
}
