import HailKit

/// `hailstorm-payment`: paying completed rides, refunds and the double-entry ledger.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
