import Configuration
import Foundation
import HailKit
import HailKitTesting
import Testing

/// Secrets mounted as files (a Kubernetes Secret volume) reach the services like any other key.
@Suite struct SecretFilesTests {
    @Test func aSecretFileGivesTheKeyAndTheEnvironmentStillWins() async throws {
        let folder = try TestEnvironment.temporaryDirectory("secrets")
        try "from-the-file-0123456789abcdef0123456789\n".write(toFile: folder + "/auth-jwt-secret", atomically: true, encoding: .utf8)
        try "hunter2".write(toFile: folder + "/auth-admin-password", atomically: true, encoding: .utf8)

        let reader = try await ConfigReader.loadHailstorm(arguments: ["service"], environment: ["SECRETS_DIR": folder])
        #expect(reader.string(forKey: "auth.jwt.secret", isSecret: true) == "from-the-file-0123456789abcdef0123456789")
        #expect(reader.string(forKey: "auth.admin.password", isSecret: true) == "hunter2")
        #expect(reader.string(forKey: "auth.admin.phone") == nil)

        let overridden = try await ConfigReader.loadHailstorm(
            arguments: ["service"], environment: ["SECRETS_DIR": folder, "AUTH_ADMIN_PASSWORD": "from-the-environment"])
        #expect(overridden.string(forKey: "auth.admin.password", isSecret: true) == "from-the-environment")
    }

    @Test func aMissingSecretsFolderStopsTheService() async throws {
        await #expect(throws: (any Error).self) {
            _ = try await ConfigReader.loadHailstorm(arguments: ["service"], environment: ["SECRETS_DIR": "/nonexistent/hailstorm-secrets"])
        }
    }
}
