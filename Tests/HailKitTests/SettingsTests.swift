import Configuration
import HailKit
import Testing

/// A setting a service cannot read stops it with the key's name, instead of running on the default.
@Suite struct SettingsTests {
    func reader(_ arguments: [String], environment: [String: String] = [:]) -> ConfigReader {
        ConfigReader.hailstorm(arguments: ["service"] + arguments, environment: environment)
    }

    func refusal(_ read: () throws -> Any) -> String? {
        do {
            _ = try read()
            return nil
        } catch let error as ConfigurationError {
            return error.description
        } catch {
            return "\(error)"
        }
    }

    @Test("whole numbers: read from the command line or the environment, the default when absent, refused when not a number or out of range")
    func wholeNumbers() throws {
        #expect(try reader(["--matching-offer-seconds", "12"]).int(forKey: "matching.offer.seconds", default: 30, in: 1...3600) == 12)
        #expect(try reader([], environment: ["MATCHING_OFFER_SECONDS": "15"]).int(forKey: "matching.offer.seconds", default: 30, in: 1...3600) == 15)
        #expect(try reader([]).int(forKey: "matching.offer.seconds", default: 30, in: 1...3600) == 30)
        for text in ["abc", "12s", "1.5", ""] {
            let why = refusal { try reader(["--matching-offer-seconds", text]).int(forKey: "matching.offer.seconds", default: 30, in: 1...3600) }
            #expect(why?.contains("matching.offer.seconds must be a whole number from 1 to 3600") == true, "\(text): \(why ?? "accepted")")
        }
        let high = refusal { try reader(["--matching-offer-seconds", "7200"]).int(forKey: "matching.offer.seconds", default: 30, in: 1...3600) }
        #expect(high == "matching.offer.seconds must be from 1 to 3600, not 7200")
    }

    @Test("comma-separated lists, and texts with commas in them: every item, the whole text, from the command line as from the environment")
    func lists() throws {
        #expect(reader(["--shards", "coupon=2,order=3"]).list(forKey: "shards") == ["coupon=2", "order=3"])
        #expect(reader([], environment: ["SHARDS": "coupon=2,order=3"]).list(forKey: "shards") == ["coupon=2", "order=3"])
        #expect(reader([]).list(forKey: "shards").isEmpty)
        let split = try ServiceConfiguration(name: "order", reader: reader(["--shards", "coupon=2,order=3", "--shard", "2"]), defaultPort: 0)
        #expect(split.client.shards.count(of: "order") == 3 && split.client.shards.count(of: "coupon") == 2 && split.shard == 2)
        let twice = refusal { try ServiceConfiguration(name: "order", reader: reader(["--shards", "order=3,order=2"]), defaultPort: 0) }
        #expect(twice == "shards: order is named twice")
        // A value whose commas are not a list's, read whole from either source.
        let city = "Berlin@52.52,13.40,25;Hamburg@53.55,10.0,20"
        #expect(reader(["--analytics-cities", city]).text(forKey: "analytics.cities", default: "") == city)
        #expect(reader([], environment: ["ANALYTICS_CITIES": city]).text(forKey: "analytics.cities", default: "") == city)
        #expect(reader([]).text(forKey: "analytics.cities", default: "Paris@48.85,2.35,15") == "Paris@48.85,2.35,15")
    }

    @Test("numbers with a fraction: refused when not a finite number in range")
    func fractions() throws {
        #expect(try reader(["--payment-sandbox-failure-rate", "0.25"]).double(forKey: "payment.sandbox.failure.rate", default: 0, in: 0...1) == 0.25)
        #expect(try reader([]).double(forKey: "payment.sandbox.failure.rate", default: 0, in: 0...1) == 0)
        for text in ["a quarter", "nan", "1.5", "-0.1"] {
            let why = refusal { try reader(["--payment-sandbox-failure-rate", text]).double(forKey: "payment.sandbox.failure.rate", default: 0, in: 0...1) }
            #expect(why?.hasPrefix("payment.sandbox.failure.rate must be") == true, "\(text): \(why ?? "accepted")")
        }
    }

    @Test("switches: true or false (or 1, 0, yes, no), the default when absent, anything else refused")
    func switches() throws {
        #expect(try reader(["--auth-denylist-check", "false"]).flag(forKey: "auth.denylist.check", default: true) == false)
        #expect(try reader([], environment: ["AUTH_DENYLIST_CHECK": "0"]).flag(forKey: "auth.denylist.check", default: true) == false)
        #expect(try reader(["--auth-denylist-check", "YES"]).flag(forKey: "auth.denylist.check", default: false) == true)
        #expect(try reader([]).flag(forKey: "auth.denylist.check", default: true) == true)
        let why = refusal { try reader(["--auth-denylist-check", "flase"]).flag(forKey: "auth.denylist.check", default: true) }
        #expect(why == "auth.denylist.check must be true or false, not \"flase\"")
    }
}

/// The ports a local run or a test gives the processes it starts.
@Suite struct LoopbackPortsTests {
    @Test("a port is handed out once per process: several services given ports before any binds never share one")
    func neverTwice() throws {
        var seen: Set<Int> = []
        for _ in 0..<2000 {
            let port = try #require(LoopbackPorts.free())
            #expect(seen.insert(port).inserted, "port \(port) handed out twice")
            #expect(port > 0 && port < 65_536)
        }
    }
}
