import HailKit

/// `hailstorm-gateway`: the one door of Hailstorm — authentication, rate limits, routing to services.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
