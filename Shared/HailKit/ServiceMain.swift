import Configuration
import Foundation

/// The whole of a service's `main`: read configuration, build, run until SIGTERM/SIGINT.
///
/// A service that cannot start (a production secret missing, a port taken, a database that will not
/// open) says why on stderr and exits with status 1, instead of dying with a backtrace.
public enum ServiceMain {
    public static func run(_ build: (ConfigReader) async throws -> HailApplication) async {
        do {
            let reader = try await ConfigReader.loadHailstorm()
            let application = try await build(reader)
            try await application.runService()
        } catch {
            FileHandle.standardError.write(Data("hailstorm: cannot run: \(error)\n".utf8))
            exit(1)
        }
    }
}
