import HailKit

/// `hailstorm-login`: accounts, sign-in and tokens for riders, drivers and admins.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
