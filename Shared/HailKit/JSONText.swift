import NIOCore

/// JSON written straight into a buffer, for small documents on hot paths (a problem answered thousands
/// of times a second) where an encoder's reflection and intermediate values cost more than the bytes.
public enum JSONText {
    /// Appends `text` as a JSON string: quoted, with `"`, `\` and control characters escaped.
    public static func appendString(_ text: String, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var plainFrom = text.utf8.startIndex
        for index in text.utf8.indices {
            let byte = text.utf8[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            buffer.writeBytes(text.utf8[plainFrom..<index])
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            default:
                let hex = Array("0123456789abcdef".utf8)
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex[Int(byte >> 4)])
                buffer.writeInteger(hex[Int(byte & 0x0f)])
            }
            plainFrom = text.utf8.index(after: index)
        }
        buffer.writeBytes(text.utf8[plainFrom...])
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
