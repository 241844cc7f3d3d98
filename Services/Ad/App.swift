import HailKit

/// `hailstorm-ad`: ad campaigns, the ad served for a slot in the apps, impressions and clicks counted
/// and charged once each, pacing, conversions and reports.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
