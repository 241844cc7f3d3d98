import HailKit

/// `hailstorm-matching`: where drivers are, and which driver gets which order.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
