import Contracts
import EventBus
import Foundation
import HailKit
import SQLiteKit

/// Accounts and refresh tokens, in the login service's own SQLite file.
struct UserStore: Sendable {
    let db: SQLiteStore
    let service: String

    static var migrations: SQLiteMigrations {
        var migrations = SQLiteMigrations()
        migrations.add("v1-users") { db in
            try db.execute(sql: """
                CREATE TABLE users (
                    id TEXT PRIMARY KEY,
                    role TEXT NOT NULL CHECK (role IN ('rider', 'driver', 'admin')),
                    phone TEXT NOT NULL UNIQUE,
                    name TEXT NOT NULL,
                    password_hash TEXT NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE TABLE refresh_tokens (
                    token_hash TEXT PRIMARY KEY,
                    user_id TEXT NOT NULL REFERENCES users(id),
                    family_id TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    expires_at REAL NOT NULL,
                    used_at REAL,
                    revoked_at REAL
                );
                CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
                """)
        }
        Outbox.addMigrations(to: &migrations)
        migrations.add("v2-e164-phones") { db in
            // Numbers stored as typed become their E.164 form (a `+` in front), so one number is one
            // account; a number that has both forms already keeps the `+` account, the other stays
            // unreachable rather than being merged blindly.
            try db.execute(sql: "UPDATE OR IGNORE users SET phone = '+' || phone WHERE phone NOT LIKE '+%'")
        }
        return migrations
    }

    struct StoredUser: Sendable {
        var user: LoginAPI.User
        var passwordHash: String
    }

    /// Creates the account and its `user.signed_up` event in one transaction.
    /// Returns nil when the phone number is taken.
    func create(_ user: LoginAPI.User, passwordHash: String) async throws -> LoginAPI.User? {
        let service = self.service
        return try await db.write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM users WHERE phone = ?", arguments: [user.phone]) == true {
                return nil
            }
            try db.execute(
                sql: "INSERT INTO users (id, role, phone, name, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [user.id, user.role.rawValue, user.phone, user.name, passwordHash, user.createdAt])
            try Outbox.enqueue(UserEvents.SignedUp(userID: user.id, role: user.role), source: service, in: db)
            return user
        }
    }

    func user(phone: String) async throws -> StoredUser? {
        try await db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM users WHERE phone = ?", arguments: [phone]).map(Self.stored)
        }
    }

    func user(id: String) async throws -> LoginAPI.User? {
        try await db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM users WHERE id = ?", arguments: [id]).map(Self.stored)?.user
        }
    }

    private static func stored(_ row: Row) -> StoredUser {
        StoredUser(
            user: LoginAPI.User(
                id: row["id"], role: Role(rawValue: row["role"]) ?? .rider, phone: row["phone"], name: row["name"],
                createdAt: row["created_at"]),
            passwordHash: row["password_hash"])
    }

    // MARK: Refresh tokens

    func saveRefreshToken(hash: String, userID: String, familyID: String, expiresAt: Date) async throws {
        try await db.write { db in
            try db.execute(
                sql: """
                    INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, expires_at)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [hash, userID, familyID, Date().timeIntervalSince1970, expiresAt.timeIntervalSince1970])
        }
    }

    enum RotationOutcome: Sendable {
        case rotated(userID: String, familyID: String)
        case unknown
        case expired
        case revoked
        /// A token that was already exchanged came back: someone holds a copy. The family is revoked.
        case reused(userID: String, familyID: String)
    }

    /// Exchanges a refresh token: marks it used and stores its successor, in one transaction.
    func rotate(hash: String, successorHash: String, successorExpiresAt: Date) async throws -> RotationOutcome {
        try await db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM refresh_tokens WHERE token_hash = ?", arguments: [hash]) else {
                return .unknown
            }
            let familyID: String = row["family_id"]
            let userID: String = row["user_id"]
            let now = Date().timeIntervalSince1970
            if row["revoked_at"] as Double? != nil { return .revoked }
            if row["used_at"] as Double? != nil {
                try db.execute(
                    sql: "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
                    arguments: [now, familyID])
                return .reused(userID: userID, familyID: familyID)
            }
            if (row["expires_at"] as Double) <= now { return .expired }
            try db.execute(sql: "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?", arguments: [now, hash])
            try db.execute(
                sql: """
                    INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, expires_at)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [successorHash, userID, familyID, now, successorExpiresAt.timeIntervalSince1970])
            return .rotated(userID: userID, familyID: familyID)
        }
    }

    /// Revokes the family of a refresh token; returns its user and family id, nil when the token is unknown.
    func revokeFamily(ofTokenHash hash: String) async throws -> (userID: String, familyID: String)? {
        try await db.write { db in
            guard let row = try Row.fetchOne(
                db, sql: "SELECT user_id, family_id FROM refresh_tokens WHERE token_hash = ?", arguments: [hash])
            else { return nil }
            let familyID: String = row["family_id"]
            try db.execute(
                sql: "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
                arguments: [Date().timeIntervalSince1970, familyID])
            return (row["user_id"], familyID)
        }
    }

    /// Revokes every refresh token of a family (a sign-out that brought only its access token).
    func revokeFamily(id familyID: String) async throws {
        try await db.write { db in
            try db.execute(
                sql: "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
                arguments: [Date().timeIntervalSince1970, familyID])
        }
    }
}
