import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One node of a Redis Cluster, by the address clients reach it at.
public struct RedisNode: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, as Redis writes a node in `MOVED` and `ASK` (the host may be an IPv6 address).
    public init?(_ text: some StringProtocol) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port) else {
            return nil
        }
        let host = text[..<colon]
        guard !host.isEmpty else { return nil }
        self.init(host: String(host), port: port)
    }

    public var description: String { "\(host):\(port)" }
}

/// Redis Cluster's key → slot function: CRC16 (XMODEM) of the key, or of its hash tag (the part between
/// the first `{` and the next `}`, when not empty), modulo 16,384. Keys that share a tag share a slot, so a
/// script or a multi-key command may touch them together.
public enum HashSlot {
    public static let count = 16_384

    public static func of(_ key: ArraySlice<UInt8>) -> Int {
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            return Int(crc16(key[(open + 1)..<close]) & 0x3FFF)
        }
        return Int(crc16(key) & 0x3FFF)
    }

    public static func of(_ key: [UInt8]) -> Int { of(key[...]) }

    public static func of(_ key: String) -> Int { of(Array(key.utf8)) }

    /// `count` hash tags named after `name`, tag `i` hashing into the `i`-th of `count` equal ranges of
    /// the slots: with the slots spread evenly over the masters (as `redis-cli --cluster create` spreads
    /// them), `count` shards of data under these tags land on `count` different masters while there are
    /// that many. The tags name the count, so another count gives other keys.
    public static func spreadTags(_ count: Int, named name: String) -> [String] {
        let count = max(count, 1)
        return (0..<count).map { index in
            let slots = (index * Self.count / count)..<((index + 1) * Self.count / count)
            var attempt = 0
            while true {
                let tag = "\(name).\(count).\(index).\(attempt)"
                if slots.contains(of(tag)) { return tag }
                attempt += 1
            }
        }
    }

    private static let table: [UInt16] = (0..<256).map { byte in
        var crc = UInt16(byte) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }

    static func crc16(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes { crc = (crc << 8) ^ table[Int((crc >> 8) ^ UInt16(byte))] }
        return crc
    }
}

extension RedisCommand {
    /// The command's arguments (name first), read back from its RESP encoding.
    var arguments: [ArraySlice<UInt8>] { arguments(upTo: .max) }

    /// The command's first `limit` arguments at most.
    func arguments(upTo limit: Int) -> [ArraySlice<UInt8>] {
        var result: [ArraySlice<UInt8>] = []
        let bytes = encoded
        var index = bytes.startIndex
        func number() -> Int? {
            index += 1  // '*' or '$'
            var value = 0
            while index < bytes.endIndex, bytes[index] != UInt8(ascii: "\r") {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) else { return nil }
                value = value * 10 + Int(bytes[index] - UInt8(ascii: "0"))
                index += 1
            }
            index += 2
            return value
        }
        guard index < bytes.endIndex, bytes[index] == UInt8(ascii: "*"), let count = number() else { return [] }
        for _ in 0..<min(count, limit) {
            guard index < bytes.endIndex, bytes[index] == UInt8(ascii: "$"), let length = number(),
                index + length <= bytes.endIndex
            else { return result }
            result.append(bytes[index..<(index + length)])
            index += length + 2
        }
        return result
    }

    /// Commands that name no key: in a cluster they go with the keyed command next to them in the same
    /// pipeline (`MULTI`/`EXEC` around a slot's commands), or to any node.
    static let keyless: Set<String> = [
        "PING", "ECHO", "INFO", "TIME", "PUBLISH", "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
        "CLUSTER", "CONFIG", "CLIENT", "COMMAND", "DBSIZE", "AUTH", "HELLO", "SELECT", "WAIT", "READONLY",
        "READWRITE", "ASKING", "RANDOMKEY", "KEYS", "SCAN", "MULTI", "EXEC", "DISCARD", "LASTSAVE", "SAVE",
        "BGSAVE", "DEBUG", "SLOWLOG", "LATENCY", "ROLE", "RESET", "MEMORY", "LOLWUT",
    ]

    /// Commands a cluster client sends to every master (the answer is the first master's).
    static let everyMaster: Set<String> = ["FLUSHALL", "FLUSHDB", "SCRIPT", "FUNCTION"]

    /// Commands whose keys may lie in different slots, split by slot in a cluster: how their answers join.
    enum Join { case concatenate, sum }
    static let splittable: [String: Join] = [
        "MGET": .concatenate, "DEL": .sum, "UNLINK": .sum, "EXISTS": .sum, "TOUCH": .sum,
    ]

    /// The slot the command's first key hashes to; nil for a command that names no key.
    var slot: Int? {
        if Self.keyless.contains(name) || Self.everyMaster.contains(name) { return nil }
        switch name {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            let arguments = self.arguments(upTo: 4)
            guard arguments.count > 3, let keys = Int(String(decoding: arguments[2], as: UTF8.self)), keys > 0 else { return nil }
            return HashSlot.of(arguments[3])
        case "XREAD", "XREADGROUP":
            let arguments = self.arguments
            guard let streams = arguments.firstIndex(where: { String(decoding: $0, as: UTF8.self).uppercased() == "STREAMS" }),
                streams + 1 < arguments.count
            else { return nil }
            return HashSlot.of(arguments[streams + 1])
        case "XGROUP", "XINFO", "OBJECT":
            let arguments = self.arguments(upTo: 3)
            return arguments.count > 2 ? HashSlot.of(arguments[2]) : nil
        default:
            let arguments = self.arguments(upTo: 2)
            return arguments.count > 1 ? HashSlot.of(arguments[1]) : nil
        }
    }
}

/// The client side of a Redis Cluster: which master serves each of the 16,384 slots (from
/// `CLUSTER SHARDS`, falling back to `CLUSTER SLOTS`), a pool of pipelined connections per master, and
/// each command sent to the master of its key's slot.
///
/// - A pipeline's commands are grouped by master and sent to the masters side by side; the replies come
///   back in the caller's order.
/// - `MOVED` (the slot has a new owner) updates the map for that slot, refreshes the whole map in the
///   background, and sends the command again to the new owner; `ASK` (the slot is being migrated and this
///   key is already on the target) sends `ASKING` and the command to the target once, without changing
///   the map; `TRYAGAIN` and `CLUSTERDOWN` are tried again shortly. At most five redirections a command.
/// - A master that refuses connections (it died) refreshes the map and the command is tried again until
///   `reconnectWindow` has passed, so a replica promoted in its place takes over. A command already
///   written when its connection dropped fails (`connectionClosed`): it may have run.
/// - `MGET`, `DEL`, `UNLINK`, `EXISTS`, `TOUCH` over keys of different slots are split by slot and their
///   answers joined. Scripts and other multi-key commands must keep their keys in one slot (hash tags):
///   otherwise Redis answers `CROSSSLOT`, which the caller sees.
final class ClusterRouter: Sendable {
    private struct Map {
        /// Index into `masters` for each slot; -1 where no master serves it.
        var owners = [Int16](repeating: -1, count: HashSlot.count)
        var masters: [RedisNode] = []
        var refreshed: ContinuousClock.Instant? = nil
    }

    let configuration: RedisConfiguration
    private let seeds: [RedisNode]
    private let group: any EventLoopGroup
    private let logger: Logger
    private let map = NIOLockedValueBox(Map())
    private let pools = NIOLockedValueBox<[RedisNode: [ConnectionSlot]]>([:])
    /// The latest refresh of the map, and whether it still runs.
    private let refreshing = NIOLockedValueBox<(task: Task<Void, any Error>?, running: Bool)>((nil, false))
    private let turn = NIOLockedValueBox(0)
    private let counts = NIOLockedValueBox((moved: 0, ask: 0, refreshes: 0))
    private let closed = NIOLockedValueBox(false)

    init(configuration: RedisConfiguration, seeds: [RedisNode], group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.seeds = seeds
        self.group = group
        self.logger = logger
    }

    /// Redirections followed and map refreshes made since the client started.
    var redirections: (moved: Int, ask: Int, refreshes: Int) { counts.withLockedValue { $0 } }

    /// The masters serving slots now.
    func masters() async throws -> [RedisNode] {
        try await ensureMap()
        return map.withLockedValue { $0.masters }
    }

    /// The master serving `key`'s slot now.
    func node(forKey key: String) async throws -> RedisNode {
        try await ensureMap()
        guard let node = owner(of: HashSlot.of(key)) else {
            throw RedisError.server("CLUSTERDOWN Hash slot not served")
        }
        return node
    }

    func configuration(for node: RedisNode) -> RedisConfiguration {
        var copy = configuration
        copy.host = node.host
        copy.port = node.port
        return copy
    }

    // MARK: Sending

    private enum Target: Hashable {
        /// The master of the slot (any master for nil).
        case owner(slot: Int?)
        /// That node, after `ASKING` when `asking` (an `ASK` redirection), or as it is (every master).
        case node(RedisNode, asking: Bool)
    }

    private struct Part {
        var command: RedisCommand
        var target: Target
        var reply: RESPValue? = nil
        var redirections = 0
    }

    /// How a caller's command maps onto the parts sent: one part, one part per master, or a split.
    private enum Plan {
        case single(Int)
        case everyMaster(Range<Int>)
        /// The parts in `range`; `positions[i]` are the caller's key positions that part `i` carries.
        case split(Range<Int>, RedisCommand.Join, positions: [[Int]], keyCount: Int)
    }

    func pipeline(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        try await ensureMap()
        var parts: [Part] = []
        var plans: [Plan] = []
        let slots = commands.map(\.slot)
        // A keyless command goes with the nearest keyed one of the pipeline: the next, else the last before.
        var nearest = [Int?](repeating: nil, count: commands.count)
        var following: Int? = nil
        for index in commands.indices.reversed() {
            following = slots[index] ?? following
            nearest[index] = following
        }
        var preceding: Int? = nil
        for index in commands.indices {
            preceding = slots[index] ?? preceding
            nearest[index] = nearest[index] ?? preceding
        }
        for (index, command) in commands.enumerated() {
            if RedisCommand.everyMaster.contains(command.name) {
                let masters = map.withLockedValue { $0.masters }
                let start = parts.count
                for master in masters { parts.append(Part(command: command, target: .node(master, asking: false))) }
                plans.append(.everyMaster(start..<parts.count))
                continue
            }
            if let join = RedisCommand.splittable[command.name], let split = Self.split(command) {
                let start = parts.count
                parts.append(contentsOf: split.parts)
                plans.append(.split(start..<parts.count, join, positions: split.positions, keyCount: split.keyCount))
                continue
            }
            parts.append(Part(command: command, target: .owner(slot: slots[index] ?? nearest[index])))
            plans.append(.single(parts.count - 1))
        }
        try await send(&parts)
        return plans.map { plan in
            switch plan {
            case .single(let index):
                return parts[index].reply ?? .null
            case .everyMaster(let range):
                return range.lazy.compactMap { parts[$0].reply }.first { if case .error = $0 { return true } else { return false } }
                    ?? parts[range.lowerBound].reply ?? .null
            case .split(let range, let join, let positions, let keyCount):
                let replies = range.map { parts[$0].reply ?? .null }
                if let failure = replies.first(where: { if case .error = $0 { return true } else { return false } }) {
                    return failure
                }
                switch join {
                case .sum:
                    return .integer(replies.reduce(0) { $0 + ($1.int ?? 0) })
                case .concatenate:
                    var values = [RESPValue](repeating: .null, count: keyCount)
                    for (reply, carried) in zip(replies, positions) {
                        for (value, position) in zip(reply.array ?? [], carried) { values[position] = value }
                    }
                    return .array(values)
                }
            }
        }
    }

    /// A multi-key command over several slots as one command per slot, with the key positions each
    /// carries; nil when its keys share a slot.
    private static func split(_ command: RedisCommand) -> (parts: [Part], positions: [[Int]], keyCount: Int)? {
        let arguments = command.arguments
        let keys = Array(arguments.dropFirst())
        guard keys.count > 1 else { return nil }
        var bySlot: [Int: [Int]] = [:]
        var slotOrder: [Int] = []
        for (position, key) in keys.enumerated() {
            let slot = HashSlot.of(key)
            if bySlot[slot] == nil { slotOrder.append(slot) }
            bySlot[slot, default: []].append(position)
        }
        guard slotOrder.count > 1 else { return nil }
        let positions = slotOrder.map { bySlot[$0] ?? [] }
        let parts = zip(slotOrder, positions).map { slot, carried in
            Part(
                command: RedisCommand(rawArguments: [Array(arguments[0])] + carried.map { Array(keys[$0]) }),
                target: .owner(slot: slot))
        }
        return (parts, positions, keys.count)
    }

    /// Sends every part to its node, following redirections, until each has its reply.
    private func send(_ parts: inout [Part]) async throws {
        let deadline = ContinuousClock.now + configuration.reconnectWindow
        var pause = Duration.milliseconds(20)
        var todo = Array(parts.indices)
        while !todo.isEmpty {
            // Group by node; a part whose slot has no owner waits for a refreshed map.
            var byNode: [RedisNode: [Int]] = [:]
            var unserved: [Int] = []
            let fallback = anyMaster()
            for index in todo {
                switch parts[index].target {
                case .node(let node, _):
                    byNode[node, default: []].append(index)
                case .owner(let slot):
                    if let node = slot.map({ owner(of: $0) }) ?? fallback {
                        byNode[node, default: []].append(index)
                    } else {
                        unserved.append(index)
                    }
                }
            }
            var again: [Int] = unserved
            var unreachable = false
            var busy = false
            // One node's batch is sent from this task; only the others get child tasks of their own.
            let batches = byNode.map { node, indices in
                var wire: [RedisCommand] = []
                wire.reserveCapacity(indices.count)
                for index in indices {
                    if case .node(_, asking: true) = parts[index].target { wire.append(Self.asking) }
                    wire.append(parts[index].command)
                }
                return (node, indices, wire)
            }
            @Sendable func attempt(_ node: RedisNode, _ wire: [RedisCommand]) async throws -> Result<[RESPValue], RedisError> {
                do {
                    return .success(try await self.pipeline(wire, to: node))
                } catch let error as RedisError where error.commandNotSent {
                    return .failure(error)
                }
            }
            var outcomes: [(RedisNode, [Int], Result<[RESPValue], RedisError>)] = []
            if batches.count == 1, let (node, indices, wire) = batches.first {
                outcomes.append((node, indices, try await attempt(node, wire)))
            } else {
                outcomes = try await withThrowingTaskGroup(of: (RedisNode, [Int], Result<[RESPValue], RedisError>).self) { group in
                    for (node, indices, wire) in batches.dropFirst() {
                        group.addTask { (node, indices, try await attempt(node, wire)) }
                    }
                    var outcomes: [(RedisNode, [Int], Result<[RESPValue], RedisError>)] = []
                    if let (node, indices, wire) = batches.first { outcomes.append((node, indices, try await attempt(node, wire))) }
                    for try await outcome in group { outcomes.append(outcome) }
                    return outcomes
                }
            }
            for (node, indices, result) in outcomes {
                switch result {
                case .failure(let error):
                    logger.debug("redis cluster node unreachable", metadata: ["node": "\(node)", "error": "\(error)"])
                    unreachable = true
                    again.append(contentsOf: indices)
                case .success(let replies):
                    var cursor = 0
                    for index in indices {
                        if case .node(_, asking: true) = parts[index].target { cursor += 1 }
                        let reply = replies[cursor]
                        cursor += 1
                        if let (next, wait) = redirect(reply, part: &parts[index]) {
                            parts[index].target = next
                            busy = busy || wait
                            again.append(index)
                        } else {
                            parts[index].reply = reply
                        }
                    }
                }
            }
            todo = again
            guard !todo.isEmpty else { return }
            if unreachable || busy || !unserved.isEmpty {
                refreshSoon()
                guard ContinuousClock.now + pause < deadline else {
                    if unreachable { throw RedisError.connectFailed("no master of the cluster answers for these slots") }
                    for index in todo where parts[index].reply == nil {
                        parts[index].reply = .error("CLUSTERDOWN Hash slot not served")
                    }
                    return
                }
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .milliseconds(250))
                try? await refreshing.withLockedValue { $0.task }?.value
            }
        }
    }

    private static let asking = RedisCommand("ASKING")

    /// Where a reply sends its command next, and whether to pause first; nil when the reply is the answer
    /// (an error reply included, once its redirections are spent).
    private func redirect(_ reply: RESPValue, part: inout Part) -> (Target, pause: Bool)? {
        guard case .error(let message) = reply, part.redirections < 5 else { return nil }
        let words = message.split(separator: " ")
        switch words.first {
        case "MOVED":
            guard words.count == 3, let slot = Int(words[1]), let node = RedisNode(words[2]) else { return nil }
            part.redirections += 1
            counts.withLockedValue { $0.moved += 1 }
            learn(slot: slot, node: node)
            refreshSoon()
            return (.owner(slot: slot), false)
        case "ASK":
            guard words.count == 3, let node = RedisNode(words[2]) else { return nil }
            part.redirections += 1
            counts.withLockedValue { $0.ask += 1 }
            return (.node(node, asking: true), false)
        case "TRYAGAIN", "CLUSTERDOWN":
            // A multi-key command mid-migration, or a cluster electing a master: shortly, as it was.
            part.redirections += 1
            return (part.target, true)
        default:
            return nil
        }
    }

    /// One pipeline to one node on its pooled connections (no redirections followed).
    func pipeline(_ commands: [RedisCommand], to node: RedisNode) async throws -> [RESPValue] {
        let slot: ConnectionSlot = pools.withLockedValue { pools in
            if pools[node] == nil {
                let configuration = self.configuration(for: node)
                pools[node] = (0..<configuration.poolSize).map { _ in ConnectionSlot(configuration: configuration, group: group) }
            }
            let pool = pools[node]!
            let index = turn.withLockedValue { value in
                value = value &+ 1
                return value
            }
            return pool[index % pool.count]
        }
        let replies = try await slot.connection().pipeline(commands)
        guard replies.count == commands.count else {
            throw RedisError.unexpectedReply("\(replies.count) replies to \(commands.count) commands")
        }
        return replies
    }

    // MARK: The slot map

    private func owner(of slot: Int) -> RedisNode? {
        map.withLockedValue { map in
            let index = Int(map.owners[slot])
            return index >= 0 ? map.masters[index] : nil
        }
    }

    private func anyMaster() -> RedisNode? {
        map.withLockedValue { map in map.masters.isEmpty ? nil : map.masters[Int.random(in: 0..<map.masters.count)] }
    }

    private func learn(slot: Int, node: RedisNode) {
        map.withLockedValue { map in
            let index = map.masters.firstIndex(of: node) ?? {
                map.masters.append(node)
                return map.masters.count - 1
            }()
            map.owners[slot] = Int16(index)
        }
    }

    private func ensureMap() async throws {
        if closed.withLockedValue({ $0 }) { throw RedisError.clientShutdown }
        if map.withLockedValue({ $0.refreshed != nil }) { return }
        refreshSoon()
        let deadline = ContinuousClock.now + configuration.reconnectWindow
        while true {
            do {
                try await refreshing.withLockedValue { $0.task }?.value
                if map.withLockedValue({ $0.refreshed != nil }) { return }
            } catch let error as RedisError where error.commandNotSent && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            if ContinuousClock.now >= deadline { throw RedisError.connectFailed("no node of the cluster answers: \(seeds)") }
            refreshSoon()
        }
    }

    /// Starts a refresh unless one runs; refreshes at most every 100 ms.
    func refreshSoon() {
        refreshing.withLockedValue { state in
            if state.running { return }
            if let last = map.withLockedValue({ $0.refreshed }), ContinuousClock.now - last < .milliseconds(100) { return }
            state.running = true
            state.task = Task {
                defer { self.refreshing.withLockedValue { $0.running = false } }
                try await self.refresh()
            }
        }
    }

    /// Reads the slot map from the first node that answers: the known masters, then the seeds.
    private func refresh() async throws {
        let known = map.withLockedValue { $0.masters }
        var lastError: (any Error)? = nil
        for node in known + seeds.filter({ !known.contains($0) }) {
            do {
                let connection = try await RedisConnection.connect(to: configuration(for: node), on: group)
                defer { Task { await connection.close() } }
                var replies = try await connection.pipeline([RedisCommand("CLUSTER", "SHARDS")])
                var fresh = Self.map(fromShards: replies.first ?? .null)
                if fresh == nil {
                    replies = try await connection.pipeline([RedisCommand("CLUSTER", "SLOTS")])
                    fresh = Self.map(fromSlots: replies.first ?? .null)
                }
                guard var fresh else {
                    lastError = RedisError.unexpectedReply("\(node) gave no slot map: \(replies.first ?? .null)")
                    continue
                }
                fresh.refreshed = .now
                map.withLockedValue { $0 = fresh }
                counts.withLockedValue { $0.refreshes += 1 }
                return
            } catch {
                lastError = error
            }
        }
        throw lastError ?? RedisError.connectFailed("no node of the cluster to ask")
    }

    /// The map from `CLUSTER SHARDS`: each shard's slot ranges and its online master.
    private static func map(fromShards reply: RESPValue) -> Map? {
        guard let shards = reply.array, !shards.isEmpty else { return nil }
        var map = Map()
        for shard in shards {
            let fields = pairs(shard)
            guard let ranges = fields["slots"]?.array, let nodes = fields["nodes"]?.array else { return nil }
            // A shard without slots serves nothing (a node that has not yet taken up its role says so).
            guard ranges.count >= 2 else { continue }
            let master = nodes.lazy.map(pairs).first { $0["role"]?.string == "master" && $0["health"]?.string == "online" }
            guard let master, let host = master["ip"]?.string ?? master["endpoint"]?.string, let port = master["port"]?.int else { continue }
            let node = RedisNode(host: host, port: port)
            let index = map.masters.firstIndex(of: node) ?? {
                map.masters.append(node)
                return map.masters.count - 1
            }()
            var bounds = ranges.compactMap(\.int)[...]
            while bounds.count >= 2, let low = bounds.popFirst(), let high = bounds.popFirst() {
                guard low >= 0, high < HashSlot.count, low <= high else { continue }
                for slot in low...high { map.owners[slot] = Int16(index) }
            }
        }
        return map.masters.isEmpty ? nil : map
    }

    /// The map from `CLUSTER SLOTS` (Redis before 7): `[low, high, [ip, port, id], replicas…]` per range.
    private static func map(fromSlots reply: RESPValue) -> Map? {
        guard let ranges = reply.array, !ranges.isEmpty else { return nil }
        var map = Map()
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let low = parts[0].int, let high = parts[1].int,
                let master = parts[2].array, master.count >= 2, let host = master[0].string, let port = master[1].int,
                low >= 0, high < HashSlot.count, low <= high
            else { continue }
            let node = RedisNode(host: host, port: port)
            let index = map.masters.firstIndex(of: node) ?? {
                map.masters.append(node)
                return map.masters.count - 1
            }()
            for slot in low...high { map.owners[slot] = Int16(index) }
        }
        return map.masters.isEmpty ? nil : map
    }

    /// A RESP2 array of alternating names and values as a dictionary.
    private static func pairs(_ value: RESPValue) -> [String: RESPValue] {
        guard let items = value.array else { return [:] }
        var result: [String: RESPValue] = [:]
        var index = 0
        while index + 1 < items.count {
            if let name = items[index].string { result[name] = items[index + 1] }
            index += 2
        }
        return result
    }

    func shutdown() async {
        closed.withLockedValue { $0 = true }
        refreshing.withLockedValue { $0.task }?.cancel()
        let all = pools.withLockedValue { pools in
            defer { pools = [:] }
            return pools.values.flatMap { $0 }
        }
        for slot in all { await slot.close() }
    }
}
