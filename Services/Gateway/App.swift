import Configuration
import HailKit

/// `hailstorm-gateway`: the one door of Hailstorm — authentication, rate limits, routing to services.
@main
struct App {
    static func main() async throws {
        let reader = ConfigReader.hailstorm()
        let app = try await buildApplication(reader: reader)
        try await app.runService()
    }
}
