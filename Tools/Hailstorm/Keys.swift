import Contracts
import ArgumentParser
import Foundation
import HailKit

/// `hailstorm keys`: the token keys of a deployment outside the local run (compose, Kubernetes), and
/// their rotation.
struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make or rotate token keys: a private key per service and the JWKS of their public keys.",
        discussion: """
            hailstorm keys --out DIR                      a new set: DIR/<service>.key and DIR/jwks.json
            hailstorm keys --out DIR --add login:2        rotation, step 1: a new login key signs from now on;
                                                          the JWKS lists old and new (give every service the new
                                                          JWKS first, then login its new key)
            hailstorm keys --out DIR --retire login:1     rotation, step 2, once the old key's tokens expired
            --env FILE        also set HAILSTORM_JWKS and HAILSTORM_<SERVICE>_SIGNING_KEY in FILE (compose/.env)
            --kustomize DIR   also write DIR/jwks.json and the <service>-signing-key lines of DIR/secrets.env
                              (k8s/overlays/dev)
            """)

    @Option(help: "The keys folder.")
    var out: String

    @Option(help: "Rotation: a new key ISSUER:VERSION (login:2).")
    var add: String?

    @Option(help: "Rotation: the KID to drop from the JWKS (login:1).")
    var retire: String?

    @Option(help: "A compose env file to set HAILSTORM_JWKS and HAILSTORM_<SERVICE>_SIGNING_KEY in.")
    var env: String?

    @Option(help: "A kustomize overlay folder: its jwks.json and the signing keys in its secrets.env.")
    var kustomize: String?

    func run() throws {
        let folder = TokenKeyFolder(path: out)
        let keys: TokenKeyFolder.Keys
        if let add {
            guard let issuer = TokenKeys.owner(of: add) else { throw ValidationError("--add takes ISSUER:VERSION") }
            keys = try folder.add(issuer: issuer, version: String(add.dropFirst(issuer.count + 1)))
        } else if let retire {
            keys = try folder.retire(kid: retire)
        } else {
            keys = try folder.create(issuers: ServiceCatalog.all.map(\.name))
        }
        if let env {
            var values = ["HAILSTORM_JWKS": keys.jwks]
            for (issuer, key) in keys.privateKeys {
                values["HAILSTORM_\(issuer.uppercased().replacingOccurrences(of: "-", with: "_"))_SIGNING_KEY"] = key
            }
            // The ad service's token key is made once and kept through key rotations.
            if Self.value(of: "HAILSTORM_AD_TOKEN_KEY", in: env) == nil { values["HAILSTORM_AD_TOKEN_KEY"] = RunFolder.randomToken(48) }
            try Self.setLines(values, in: env)
            print("\(env): HAILSTORM_JWKS, \(keys.privateKeys.count) signing keys and the ad token key")
        }
        if let kustomize {
            try keys.jwks.write(toFile: kustomize + "/jwks.json", atomically: true, encoding: .utf8)
            var values: [String: String] = [:]
            for (issuer, key) in keys.privateKeys { values["\(issuer)-signing-key"] = key }
            let secrets = kustomize + "/secrets.env"
            if Self.value(of: "ad-token-key", in: secrets).map({ $0.count >= 32 }) != true { values["ad-token-key"] = RunFolder.randomToken(48) }
            try Self.setLines(values, in: secrets)
            print("\(kustomize): jwks.json, \(keys.privateKeys.count) signing keys and the ad token key in secrets.env")
        }
        let kids = try TokenKeys.parse(jwks: keys.jwks).keys.map(\.kid)
        print("\(folder.jwksFile): \(kids.joined(separator: ", "))")
        print("private keys: \(keys.privateKeys.keys.sorted().map { folder.keyFile($0) }.joined(separator: ", "))")
    }
}

extension Keys {
    /// The non-empty value of `name` in an env file, if the file has one.
    static func value(of name: String, in file: String) -> String? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name + "=") {
            let value = line.dropFirst(name.count + 1)
            if !value.isEmpty { return String(value) }
        }
        return nil
    }

    /// Sets `NAME=value` lines in an env file (made when missing, owner-only): replaces the lines of the
    /// names given, keeps every other line, adds the new ones at the end.
    static func setLines(_ values: [String: String], in file: String) throws {
        let existing = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        var lines = existing.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        var pending = values
        for (index, line) in lines.enumerated() {
            guard let equals = line.firstIndex(of: "="), !line.hasPrefix("#") else { continue }
            let name = String(line[..<equals])
            if let value = pending.removeValue(forKey: name) { lines[index] = "\(name)=\(value)" }
        }
        for name in pending.keys.sorted() { lines.append("\(name)=\(pending[name]!)") }
        FileManager.default.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600])
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: false, encoding: .utf8)
    }
}

/// `hailstorm token`: access tokens signed with the local run's login key, for load tools and scripts
/// that need many signed-in riders without signing each up (wrk's request scripts, say).
struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print access tokens signed with the local run's login key (one per line: user id, tab, token).")

    @OptionGroup var run: RunFolderOption

    @Option(help: "rider, driver or admin.")
    var role: String = "rider"

    @Option(help: "How many (users load-1 … load-N).")
    var count: Int = 1

    @Option(help: "Seconds each stays valid.")
    var seconds: Int = 3600

    func validate() throws {
        guard ["rider", "driver", "admin"].contains(role) else { throw ValidationError("--role is rider, driver or admin") }
        guard (1...1_000_000).contains(count), (1...86_400).contains(seconds) else {
            throw ValidationError("--count is 1 to 1,000,000 and --seconds 1 to 86,400")
        }
    }

    func run() async throws {
        let keys = try TokenKeyFolder(path: run.folder.keysFolder).read()
        guard let login = keys.privateKeys[AccessTokens.userIssuer] else {
            throw ValidationError("no login key in \(run.folder.keysFolder): run `hailstorm up` first")
        }
        let tokens = try await AccessTokens(service: "hailstorm-token", signingKey: login, jwks: keys.jwks, cacheSize: 0)
        let now = Date()
        var output = ""
        for index in 1...count {
            let user = "load-\(role)-\(index)"
            let token = try await tokens.sign(AccessTokenClaims(
                userID: user, role: Role(rawValue: role)!, tokenID: RandomID.uuid(), issuedAt: now,
                expiresAt: now + TimeInterval(seconds)))
            output += "\(user)\t\(token)\n"
        }
        FileHandle.standardOutput.write(Data(output.utf8))
    }
}
