import HailKit

/// `hailstorm-command`: the command centre — the service board and alerts book from Prometheus, and the
/// operator's levers with their audit log.
@main
struct App {
    static func main() async {
        await ServiceMain.run(buildApplication(reader:))
    }
}
