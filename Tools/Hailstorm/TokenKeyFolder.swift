import Foundation
import HailKit

/// A folder of token keys: `<issuer>.key` (a private key, one line, readable by the owner only) for each
/// issuer and `jwks.json` (every public key the deployment trusts). `hailstorm up` keeps one in its run
/// folder; `hailstorm keys` makes and rotates one for compose or Kubernetes.
struct TokenKeyFolder {
    let path: String

    struct Keys: Sendable {
        var privateKeys: [String: String]
        var jwks: String
    }

    var jwksFile: String { path + "/jwks.json" }
    func keyFile(_ issuer: String) -> String { path + "/\(issuer).key" }

    func read() throws -> Keys {
        let jwks = try String(contentsOfFile: jwksFile, encoding: .utf8)
        let document = try TokenKeys.parse(jwks: jwks)
        var privateKeys: [String: String] = [:]
        for issuer in Set(document.keys.compactMap { TokenKeys.owner(of: $0.kid) }) {
            if let key = try? String(contentsOfFile: keyFile(issuer), encoding: .utf8) {
                privateKeys[issuer] = key.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        return Keys(privateKeys: privateKeys, jwks: jwks)
    }

    /// A new key for each issuer (kid `<issuer>:1`) and their JWKS, replacing what the folder held.
    func create(issuers: [String]) throws -> Keys {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let (privateKeys, jwks) = try TokenKeys.generate(issuers: issuers)
        for (issuer, key) in privateKeys { try writePrivate(key, to: keyFile(issuer)) }
        try jwks.write(toFile: jwksFile, atomically: true, encoding: .utf8)
        return Keys(privateKeys: privateKeys, jwks: jwks)
    }

    /// Rotation, step one: a new key for `issuer` under `kid` `<issuer>:<version>` becomes its signing key
    /// (`<issuer>.key`; the previous one is kept as `<issuer>.key.previous`), and the JWKS lists both, so
    /// tokens signed with either verify while the old ones live out their lifetime.
    func add(issuer: String, version: String) throws -> Keys {
        var document = try TokenKeys.parse(jwks: try String(contentsOfFile: jwksFile, encoding: .utf8))
        let kid = "\(issuer):\(version)"
        guard !document.keys.contains(where: { $0.kid == kid }) else { throw RunnerError("\(kid) is in the JWKS already") }
        let key = TokenKeys.newPrivateKey()
        document.keys.append(try TokenKeys.publicKey(of: key, kid: kid))
        if FileManager.default.fileExists(atPath: keyFile(issuer)) {
            let previous = keyFile(issuer) + ".previous"
            try? FileManager.default.removeItem(atPath: previous)
            try FileManager.default.moveItem(atPath: keyFile(issuer), toPath: previous)
        }
        try writePrivate(key, to: keyFile(issuer))
        try TokenKeys.jwks(document.keys).write(toFile: jwksFile, atomically: true, encoding: .utf8)
        return try read()
    }

    /// Rotation, last step: `kid` leaves the JWKS, and tokens it signed stop verifying.
    func retire(kid: String) throws -> Keys {
        var document = try TokenKeys.parse(jwks: try String(contentsOfFile: jwksFile, encoding: .utf8))
        guard document.keys.contains(where: { $0.kid == kid }) else { throw RunnerError("\(kid) is not in the JWKS") }
        document.keys.removeAll { $0.kid == kid }
        try TokenKeys.jwks(document.keys).write(toFile: jwksFile, atomically: true, encoding: .utf8)
        return try read()
    }

    private func writePrivate(_ key: String, to file: String) throws {
        FileManager.default.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600])
        try (key + "\n").write(toFile: file, atomically: false, encoding: .utf8)
        chmod(file, 0o600)
    }
}
