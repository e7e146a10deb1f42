/// Element types a checkpoint tensor can hold.
///
/// Raw values are the safetensors dtype strings (`F32`, `BF16`, …), which are also the
/// names used in the pkmz header (see `schemas/pkmz-header.schema.json`).
public enum DType: String, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"
    case float64 = "F64"
    case int64 = "I64"
    case int32 = "I32"
    case int16 = "I16"
    case int8 = "I8"
    case uint8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    /// Whether the type is a floating-point type (the types a storage-dtype conversion may narrow or widen).
    public var isFloatingPoint: Bool {
        switch self {
        case .float32, .float16, .bfloat16, .float64: return true
        default: return false
        }
    }

    /// A short lowercase name for humans (`float32`, `bfloat16`, …).
    public var displayName: String {
        switch self {
        case .float32: return "float32"
        case .float16: return "float16"
        case .bfloat16: return "bfloat16"
        case .float64: return "float64"
        case .int64: return "int64"
        case .int32: return "int32"
        case .int16: return "int16"
        case .int8: return "int8"
        case .uint8: return "uint8"
        case .bool: return "bool"
        }
    }

    public var description: String { displayName }

    /// Parses either the safetensors code (`F32`) or the display name (`float32`, `f32`, `bf16`, `fp16`).
    public init?(parsing text: String) {
        if let direct = DType(rawValue: text) { self = direct; return }
        switch text.lowercased() {
        case "float32", "f32", "fp32", "float": self = .float32
        case "float16", "f16", "fp16", "half": self = .float16
        case "bfloat16", "bf16": self = .bfloat16
        case "float64", "f64", "fp64", "double": self = .float64
        case "int64", "i64", "long": self = .int64
        case "int32", "i32", "int": self = .int32
        case "int16", "i16", "short": self = .int16
        case "int8", "i8": self = .int8
        case "uint8", "u8": self = .uint8
        case "bool": self = .bool
        default: return nil
        }
    }
}

extension DType {
    /// An `Encoder.userInfo` key: when its value is `true`, a ``DType`` encodes as its
    /// ``displayName`` (`float32`) instead of its safetensors code (`F32`). Machine-readable JSON output
    /// output sets it so that text and JSON spell dtypes alike; files keep the codes.
    public static let encodeDisplayNameKey = CodingUserInfoKey(rawValue: "PKMTensor.DType.displayName")!

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = DType(rawValue: text) ?? DType(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "'\(text)' is not a dtype"))
        }
        self = value
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(encoder.userInfo[DType.encodeDisplayNameKey] as? Bool == true ? displayName : rawValue)
    }
}
