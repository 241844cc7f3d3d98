import HailKit

/// `hailstorm-order`: fares, orders and the trip's state machine.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
