import Configuration
import HailKit

/// `hailstorm-login`: accounts, sign-in and tokens for riders, drivers and admins.
@main
struct App {
    static func main() async throws {
        let reader = ConfigReader.hailstorm()
        let app = try await buildApplication(reader: reader)
        try await app.runService()
    }
}
