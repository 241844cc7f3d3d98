import HailKit

/// `hailstorm-coupon`: coupon campaigns, the flash-sale claim and riders' wallets.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
