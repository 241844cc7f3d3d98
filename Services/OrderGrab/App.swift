import HailKit

/// `hailstorm-order-grab`: drivers racing for an offered order; exactly one wins.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
