import Foundation
import NIOCore
import NIOHTTP1

/// Headless Chromium driven through chromedriver's W3C WebDriver API, for tests that use a page as a
/// person would: open it, type, click, read what it shows, take screenshots.
public final class WebDriver: @unchecked Sendable {
    // Safe: used by one test task at a time.
    let driver: TestProcess
    let base: String
    let session: String

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Whether chromedriver and Chromium are installed (`apt-get install chromium chromium-driver`).
    public static var isAvailable: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") && FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium")
    }

    /// Starts chromedriver on a free loopback port and opens a headless Chromium window of `width` × `height`.
    public init(width: Int = 1600, height: Int = 1300) async throws {
        let port = try TestEnvironment.freePort()
        driver = try TestProcess(executable: "/usr/bin/chromedriver", arguments: ["--port=\(port)", "--allowed-ips=127.0.0.1"], name: "chromedriver")
        base = "http://127.0.0.1:\(port)"
        let deadline = ContinuousClock.now + .seconds(20)
        while (try? await testRequest(.GET, base + "/status", timeout: .seconds(1)))?.status != 200 {
            guard ContinuousClock.now < deadline, driver.isRunning else {
                throw Failure(description: "chromedriver did not start: \(driver.output().suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let options: [String: Any] = [
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=\(width),\(height)"],
        ]
        let answer = try await testRequest(
            .POST, base + "/session", json: ["capabilities": ["alwaysMatch": ["browserName": "chrome", "goog:chromeOptions": options]]],
            timeout: .seconds(60))
        guard let value = answer.json["value"] as? [String: Any], let session = value["sessionId"] as? String else {
            driver.kill()
            throw Failure(description: "no browser session: \(answer.text.prefix(2000))")
        }
        self.session = session
    }

    /// Ends the session and chromedriver.
    public func quit() async {
        _ = try? await testRequest(.DELETE, base + "/session/\(session)", timeout: .seconds(10))
        driver.kill()
    }

    @discardableResult
    func command(_ method: HTTPMethod, _ path: String, _ body: [String: Any]? = nil) async throws -> Any? {
        let answer = try await testRequest(method, base + "/session/\(session)" + path, json: body ?? (method == .POST ? [:] : nil), timeout: .seconds(30))
        let value = answer.json["value"]
        if answer.status != 200 {
            throw Failure(description: "\(method) \(path): \(answer.status) \((value as? [String: Any])?["message"] ?? answer.text.prefix(500))")
        }
        return value
    }

    public func open(_ url: String) async throws {
        try await command(.POST, "/url", ["url": url])
    }

    /// Runs `script` (a function body; `arguments[0]`… are `arguments`) in the page and returns its value.
    public func run(_ script: String, _ arguments: [Any] = []) async throws -> Any? {
        try await command(.POST, "/execute/sync", ["script": script, "args": arguments])
    }

    func element(_ selector: String) async throws -> String {
        let value = try await command(.POST, "/element", ["using": "css selector", "value": selector]) as? [String: Any]
        guard let id = value?.values.first as? String else { throw Failure(description: "no element \(selector)") }
        return id
    }

    /// Types `text` into the field `selector` finds.
    public func type(_ text: String, into selector: String) async throws {
        try await command(.POST, "/element/\(try await element(selector))/value", ["text": text])
    }

    /// Clicks the element `selector` finds.
    public func click(_ selector: String) async throws {
        try await command(.POST, "/element/\(try await element(selector))/click")
    }

    /// Waits (up to `timeout`) until `script` returns true; throws with `what` when it never does.
    public func wait(_ what: String, timeout: Duration = .seconds(30), _ script: String, _ arguments: [Any] = []) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await run(script, arguments) as? Bool == true { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw Failure(description: "the page never showed \(what) within \(timeout)")
    }

    /// Saves a PNG of the window at `path`.
    public func screenshot(to path: String) async throws {
        guard let encoded = try await command(.GET, "/screenshot") as? String, let data = Data(base64Encoded: encoded) else {
            throw Failure(description: "no screenshot")
        }
        try FileManager.default.createDirectory(
            at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: path))
    }
}
