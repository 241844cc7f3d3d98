#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A body type read without Foundation's `JSONDecoder` when it has its plain shape: the keys it declares,
/// each once, no escapes in strings, numbers as JSON writes them. `init(scanning:)` returns nil for
/// anything else — an unknown key, an escape, a duplicate, a malformed document — and the caller then
/// decodes the body the general way, which accepts or refuses it (with the reason) exactly as before.
/// So the fast reading changes what a body costs, never what it means.
///
/// For the platform's most frequent bodies: a driver's fix (`MatchingAPI.Locations`, a thousand a second
/// from a fleet of 10,000) and the gateway's batches of them. A decoder's reflection, containers and
/// coding paths cost several times the bytes' own reading there.
public protocol ScannableJSON: Sendable {
    init?(scanning scanner: inout JSONScanner)
}

/// A body type written without Foundation's `JSONEncoder`: `writeJSON` appends a document the general
/// decoder reads back as the same value (keys sorted, as the encoder writes them) or returns false when the value has a part it does not write itself (the
/// caller then encodes it the general way).
public protocol WritableJSON: Sendable {
    func writeJSON(to writer: inout JSONWriter) -> Bool
}

extension ScannableJSON {
    /// The value, when `bytes` are one document of the plain shape and nothing but whitespace follows.
    public static func scanned(from bytes: UnsafeRawBufferPointer) -> Self? {
        var scanner = JSONScanner(bytes)
        guard let value = Self(scanning: &scanner), scanner.atEnd else { return nil }
        return value
    }
}

extension WritableJSON {
    /// The document's bytes, or nil when the value has a part only the general encoder writes.
    public func jsonBytes() -> [UInt8]? {
        var writer = JSONWriter()
        return writeJSON(to: &writer) ? writer.bytes : nil
    }
}

/// The choice every reader and writer of JSON bodies and payloads makes first: the plain shape on its
/// own when the type has one and the value or bytes are of it, the general coder otherwise.
public enum PlainJSON {
    /// `bytes` read as `T` when `T` is `ScannableJSON` and they hold its plain shape; nil otherwise (then
    /// decode them the general way, which reads or refuses them with the reason).
    public static func read<T>(_ type: T.Type, from bytes: UnsafeRawBufferPointer) -> T? {
        guard let scannable = T.self as? any ScannableJSON.Type else { return nil }
        return scannable.scanned(from: bytes) as? T
    }

    /// `value`'s document when it is `WritableJSON` and writes every part of itself; nil otherwise (then
    /// encode it the general way).
    public static func bytes(of value: some Any) -> [UInt8]? {
        (value as? any WritableJSON)?.jsonBytes()
    }
}

/// Reads JSON tokens off bytes, strictly: whatever it does not take (`nil`, `false`) is left to the
/// general decoder.
public struct JSONScanner {
    private let bytes: UnsafeRawBufferPointer
    private var at = 0

    public init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    private mutating func skipSpace() {
        while at < bytes.count {
            switch bytes[at] {
            case 0x20, 0x09, 0x0A, 0x0D: at += 1
            default: return
            }
        }
    }

    /// Only whitespace is left.
    public var atEnd: Bool {
        mutating get {
            skipSpace()
            return at == bytes.count
        }
    }

    /// Takes `byte` (after whitespace) when it is next.
    public mutating func take(_ byte: UInt8) -> Bool {
        skipSpace()
        guard at < bytes.count, bytes[at] == byte else { return false }
        at += 1
        return true
    }

    /// Takes `null` when it is next.
    public mutating func takeNull() -> Bool {
        skipSpace()
        guard at + 4 <= bytes.count, bytes[at] == UInt8(ascii: "n"), bytes[at + 1] == UInt8(ascii: "u"),
            bytes[at + 2] == UInt8(ascii: "l"), bytes[at + 3] == UInt8(ascii: "l")
        else { return false }
        at += 4
        return true
    }

    /// The raw bytes of a string without escapes or control characters (its quotes taken); nil otherwise.
    private mutating func plainString() -> Range<Int>? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = at
        while at < bytes.count {
            let byte = bytes[at]
            if byte == UInt8(ascii: "\"") {
                at += 1
                return start..<(at - 1)
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            at += 1
        }
        return nil
    }

    /// An object's next key (its `:` taken), when it is one of `names` (as an index into them): nil for
    /// any other key, or one with an escape.
    public mutating func key(_ names: [StaticString]) -> Int? {
        guard let range = plainString(), take(UInt8(ascii: ":")) else { return nil }
        for (index, name) in names.enumerated() where name.utf8CodeUnitCount == range.count {
            if memcmp(bytes.baseAddress! + range.lowerBound, name.utf8Start, range.count) == 0 { return index }
        }
        return nil
    }

    /// A string without escapes, as valid UTF-8.
    public mutating func string() -> String? {
        guard let range = plainString() else { return nil }
        return String(validating: UnsafeRawBufferPointer(rebasing: bytes[range]).bindMemory(to: UInt8.self), as: UTF8.self)
    }

    /// A string without escapes, or null (`.some(nil)`); nil when it is neither.
    public mutating func optionalString() -> String?? {
        if takeNull() { return .some(nil) }
        return string().map { .some($0) }
    }

    /// A value of a string-backed enum, by its raw value.
    public mutating func value<T: RawRepresentable>(_ type: T.Type) -> T? where T.RawValue == String {
        string().flatMap(T.init(rawValue:))
    }

    /// A number in JSON's grammar whose value is a finite `Double`.
    public mutating func number() -> Double? {
        skipSpace()
        let start = at
        guard scanNumber(integral: false) else { return nil }
        let length = at - start
        guard length < 64 else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: length + 1) { text -> Double? in
            for index in 0..<length { text[index] = CChar(bitPattern: bytes[start + index]) }
            text[length] = 0
            var end: UnsafeMutablePointer<CChar>? = nil
            let value = strtod(text.baseAddress!, &end)
            guard end == text.baseAddress! + length, value.isFinite else { return nil }
            return value
        }
    }

    /// An integer written with digits only (an optional minus), within `Int`.
    public mutating func integer() -> Int? {
        skipSpace()
        let start = at
        guard scanNumber(integral: true), at - start <= 18 else { return nil }
        var value = 0
        var negative = false
        for index in start..<at {
            let byte = bytes[index]
            if byte == UInt8(ascii: "-") { negative = true } else { value = value * 10 + Int(byte - UInt8(ascii: "0")) }
        }
        return negative ? -value : value
    }

    /// Moves over `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` (without fraction or exponent when
    /// `integral`); false when the bytes are not one.
    private mutating func scanNumber(integral: Bool) -> Bool {
        func isDigit(_ index: Int) -> Bool { index < bytes.count && bytes[index] >= 0x30 && bytes[index] <= 0x39 }
        var index = at
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard isDigit(index) else { return false }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            while isDigit(index) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            guard !integral else { return false }
            index += 1
            guard isDigit(index) else { return false }
            while isDigit(index) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            guard !integral else { return false }
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard isDigit(index) else { return false }
            while isDigit(index) { index += 1 }
        }
        // A number runs up to a delimiter; "1x" or "01" is not one.
        if index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x09, 0x0A, 0x0D: break
            default: return false
            }
        }
        at = index
        return true
    }

    /// Reads an array of `element`s; nil when it is not one or an element is not.
    public mutating func array<Element>(_ element: (inout JSONScanner) -> Element?) -> [Element]? {
        guard take(UInt8(ascii: "[")) else { return nil }
        var elements: [Element] = []
        if take(UInt8(ascii: "]")) { return elements }
        repeat {
            guard let next = element(&self) else { return nil }
            elements.append(next)
        } while take(UInt8(ascii: ","))
        return take(UInt8(ascii: "]")) ? elements : nil
    }

    /// Reads an object whose keys are among `names`, each at most once, handing each key's index to
    /// `value` (which reads the value; false when it is not of its shape). Returns which keys came (bit
    /// n for `names[n]`), or nil when the object is not of the shape.
    public mutating func object(_ names: [StaticString], _ value: (Int, inout JSONScanner) -> Bool) -> UInt64? {
        guard take(UInt8(ascii: "{")) else { return nil }
        var seen: UInt64 = 0
        if take(UInt8(ascii: "}")) { return seen }
        repeat {
            guard let index = key(names), seen & (1 << index) == 0, value(index, &self) else { return nil }
            seen |= 1 << index
        } while take(UInt8(ascii: ","))
        return take(UInt8(ascii: "}")) ? seen : nil
    }
}

/// Writes JSON into bytes: objects' keys in the order given (callers give them sorted, as `JSONBody`'s
/// encoder writes them), numbers as Swift prints them (shortest round-trip form).
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {
        bytes.reserveCapacity(256)
    }

    public mutating func raw(_ text: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    public mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): raw("\\\"")
            case UInt8(ascii: "\\"): raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            case ..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                raw("\\u00")
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0x0f)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// A finite number; false (nothing written) for infinity or NaN, which JSON cannot hold.
    public mutating func number(_ value: Double) -> Bool {
        guard value.isFinite else { return false }
        if value == value.rounded(.towardZero), abs(value) < 1e15 {
            bytes.append(contentsOf: String(Int64(value)).utf8)
        } else {
            bytes.append(contentsOf: value.description.utf8)
        }
        return true
    }

    public mutating func integer(_ value: Int) {
        bytes.append(contentsOf: String(value).utf8)
    }

    /// `"key":` — `first` leaves out the comma before it.
    public mutating func key(_ name: StaticString, first: Bool = false) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "\""))
        raw(name)
        raw("\":")
    }

    public mutating func strings(_ values: [String]) {
        bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            string(value)
        }
        bytes.append(UInt8(ascii: "]"))
    }
}
