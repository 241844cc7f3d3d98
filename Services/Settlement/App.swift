import Configuration
import Contracts
import Foundation
import HailKit

/// `hailstorm-settlement`: pays drivers in batches and reconciles the books.
///
/// `hailstorm-settlement run [--key value…]` is the one-shot form for a scheduler (a Kubernetes CronJob):
/// it asks the running settlement service, found through discovery like any caller, for a batch now,
/// prints it as JSON and exits 0 — or says why not on stderr and exits 1. The batch runs in the service,
/// the one writer of settlement's file, so a one-shot and a scheduled run never pay an entry twice.
@main
struct App {
    static func main() async {
        let arguments = CommandLine.arguments
        if arguments.dropFirst().first == "run" {
            await runOnce(arguments: [arguments[0]] + arguments.dropFirst(2))
        } else {
            await ServiceMain.run(buildApplication(reader:))
        }
    }

    static func runOnce(arguments: [String]) async {
        do {
            let reader = try await ConfigReader.loadHailstorm(arguments: arguments)
            let kit = try ServiceKit(name: "settlement-run", reader: reader, defaultPort: 0)
            let credentials = try ServiceCredentials(tokens: try await kit.accessTokens())
            let result: Result<SettlementAPI.Batch, any Error>
            do {
                result = .success(try await kit.clients.call(
                    SettlementAPI.run, .init(trigger: "command"), headers: try await credentials.headers(for: SettlementAPI.service), context: .none))
            } catch {
                result = .failure(error)
            }
            await kit.redis.shutdown()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let batch = try result.get()
            FileHandle.standardOutput.write(try encoder.encode(batch) + Data("\n".utf8))
            exit(0)
        } catch {
            FileHandle.standardError.write(Data("hailstorm-settlement run: \(error)\n".utf8))
            exit(1)
        }
    }
}
