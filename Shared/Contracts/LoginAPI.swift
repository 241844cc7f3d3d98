public import HTTPTypes

/// The login service's API: accounts, sign-in and tokens.
public enum LoginAPI {
    public static let service = "login"

    public struct SignUpRequest: Codable, Sendable, Hashable {
        public var role: Role
        public var phone: String
        public var password: String
        public var name: String

        public init(role: Role, phone: String, password: String, name: String) {
            self.role = role
            self.phone = phone
            self.password = password
            self.name = name
        }
    }

    public struct User: Codable, Sendable, Hashable {
        public var id: String
        public var role: Role
        public var phone: String
        public var name: String
        public var createdAt: Double

        public init(id: String, role: Role, phone: String, name: String, createdAt: Double) {
            self.id = id
            self.role = role
            self.phone = phone
            self.name = name
            self.createdAt = createdAt
        }
    }

    public struct SignInRequest: Codable, Sendable, Hashable {
        public var phone: String
        public var password: String

        public init(phone: String, password: String) {
            self.phone = phone
            self.password = password
        }
    }

    public struct TokenPair: Codable, Sendable, Hashable {
        public var accessToken: String
        public var refreshToken: String
        /// Seconds until the access token expires.
        public var expiresIn: Int
        public var tokenType: String
        public var user: User

        public init(accessToken: String, refreshToken: String, expiresIn: Int, user: User) {
            self.accessToken = accessToken
            self.refreshToken = refreshToken
            self.expiresIn = expiresIn
            self.tokenType = "Bearer"
            self.user = user
        }
    }

    public struct RefreshRequest: Codable, Sendable, Hashable {
        public var refreshToken: String

        public init(refreshToken: String) {
            self.refreshToken = refreshToken
        }
    }

    /// Signing out revokes the refresh token's whole family and puts the access token on the deny-list.
    public struct LogoutRequest: Codable, Sendable, Hashable {
        public var refreshToken: String?
        public var accessToken: String?

        public init(refreshToken: String? = nil, accessToken: String? = nil) {
            self.refreshToken = refreshToken
            self.accessToken = accessToken
        }
    }

    public static let signUp = Endpoint<SignUpRequest, User>(
        service: service, .post, "/v1/users", successStatus: .created)
    public static let signIn = Endpoint<SignInRequest, TokenPair>(service: service, .post, "/v1/sessions")
    public static let refresh = Endpoint<RefreshRequest, TokenPair>(service: service, .post, "/v1/sessions/refresh")
    public static let logout = Endpoint<LogoutRequest, NoContent>(
        service: service, .post, "/v1/sessions/logout", successStatus: .noContent, isIdempotent: true)
    public static let user = Endpoint<NoContent, User>(service: service, .get, "/v1/users/{id}")
}

/// Events of the login service.
public enum UserEvents {
    public struct SignedUp: DomainEvent, Hashable {
        public static let stream = "user"
        public static let type = "user.signed_up"
        public var userID: String
        public var role: Role

        public init(userID: String, role: Role) {
            self.userID = userID
            self.role = role
        }
    }

    public struct SignedIn: DomainEvent, Hashable {
        public static let stream = "user"
        public static let type = "user.signed_in"
        public var userID: String

        public init(userID: String) {
            self.userID = userID
        }
    }
}

/// Claims of a Hailstorm access token, as the gateway passes them on to services.
public enum IdentityHeaders {
    public static let userID = HTTPField.Name("X-Hailstorm-User")!
    public static let role = HTTPField.Name("X-Hailstorm-Role")!
}

/// A sign-out, or a refresh token used twice: login publishes it on `channel` (Redis pub/sub), and every
/// gateway instance closes the WebSockets opened with a token of that session (or with that token).
public struct SessionRevocation: Codable, Sendable, Hashable {
    public var userID: String
    /// Every token of this sign-in session.
    public var sessionID: String?
    /// This one access token.
    public var tokenID: String?

    public init(userID: String, sessionID: String?, tokenID: String?) {
        self.userID = userID
        self.sessionID = sessionID
        self.tokenID = tokenID
    }

    public static let channel = "auth:revoked"
}
