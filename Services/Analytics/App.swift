import Configuration
import Foundation
import HailKit

/// `hailstorm-analytics`: the platform's figures by minute, city and cell, kept from every stream, and
/// each trip's driven path read for detours. `hailstorm-analytics rebuild` (with the service's
/// configuration) empties its tables and reads the streams again from their start.
@main
struct App {
    static func main() async {
        let arguments = CommandLine.arguments
        guard arguments.count > 1, arguments[1] == "rebuild" else {
            await ServiceMain.run(buildApplication(reader:))
            return
        }
        do {
            let reader = try await ConfigReader.loadHailstorm(arguments: [arguments[0]] + arguments.dropFirst(2))
            var kit = try AnalyticsKit.serviceKit(reader: reader)
            let parts = try await AnalyticsKit(kit: &kit, reader: reader)
            let started = Date()
            let events = try await parts.ingest.rebuild(redis: kit.redis, analyser: parts.analyser, logger: kit.logger)
            print("analytics rebuilt from \(events) events in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
            await kit.redis.shutdown()
        } catch {
            FileHandle.standardError.write(Data("hailstorm-analytics: cannot rebuild: \(error)\n".utf8))
            exit(1)
        }
    }
}
