import Foundation
import HailKit
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The command centre's page, served without a token (it signs its operator in and calls the API with
/// theirs): its own HTML, script and style compiled into the binary, and Debian's Leaflet and Chart.js
/// read from `javascriptDirectory` (`/usr/share/javascript`; nothing comes from a CDN). The gateway
/// serves it at `/command/`.
struct PageController: Sendable {
    struct Asset: Sendable {
        var type: String
        var body: ByteBuffer
        /// The libraries do not change while the service runs; the page's own files may with a new build.
        var cacheControl: String
    }

    let assets: [String: Asset]
    /// The libraries that were not found (they answer 404 with how to install them).
    let missing: [String: String]

    /// Only what the page loads: its own files and the two libraries.
    static let contentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'"

    init(javascriptDirectory: String, logger: Logger) {
        func own(_ bytes: [UInt8], _ type: String) -> Asset {
            Asset(type: type, body: ByteBuffer(bytes: bytes), cacheControl: "no-cache")
        }
        var assets: [String: Asset] = [
            "": own(PackageResources.index_html, "text/html; charset=utf-8"),
            "index.html": own(PackageResources.index_html, "text/html; charset=utf-8"),
            "app.js": own(PackageResources.app_js, "text/javascript; charset=utf-8"),
            "app.css": own(PackageResources.app_css, "text/css; charset=utf-8"),
        ]
        var missing: [String: String] = [:]
        let libraries: [(name: String, file: String, type: String, package: String)] = [
            ("lib/leaflet.js", "leaflet/leaflet.min.js", "text/javascript; charset=utf-8", "libjs-leaflet"),
            ("lib/leaflet.css", "leaflet/leaflet.css", "text/css; charset=utf-8", "libjs-leaflet"),
            ("lib/chart.js", "chart.js/chart.min.js", "text/javascript; charset=utf-8", "libjs-chart.js"),
        ]
        for library in libraries {
            let path = javascriptDirectory + "/" + library.file
            if let data = FileManager.default.contents(atPath: path) {
                assets[library.name] = Asset(type: library.type, body: ByteBuffer(bytes: data), cacheControl: "public, max-age=86400")
            } else {
                missing[library.name] = "\(path) is missing: install Debian's \(library.package)"
                logger.warning("the command centre's page lacks a library", metadata: ["path": "\(path)", "package": "\(library.package)"])
            }
        }
        self.assets = assets
        self.missing = missing
    }

    func register(on router: Router<HailRequestContext>) {
        // (Hummingbird matches `/page/` with `/page`.)
        for path in ["/page", "/page/**"] {
            router.get(RouterPath(path)) { request, _ -> Response in
                try answer(for: String(request.uri.path.dropFirst("/page".count).drop { $0 == "/" }))
            }
        }
    }

    func answer(for name: String) throws -> Response {
        guard let asset = assets[name] else {
            if let reason = missing[name] { throw Problem.notFound(reason) }
            throw Problem.notFound("The command centre's page has no \(name)")
        }
        let headers: HTTPFields = [
            .contentType: asset.type, .cacheControl: asset.cacheControl, .contentSecurityPolicy: Self.contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
        ]
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.body))
    }
}
