/// Errors raised by the tensor core.
public enum TensorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A shape has a negative dimension.
    case negativeDimension(shape: [Int])
    /// The element count or byte count of a shape does not fit in `Int`.
    case sizeOverflow(shape: [Int], dtype: DType)
    /// The storage holds a different number of bytes than shape × dtype size requires.
    case byteCountMismatch(name: String?, expected: Int, actual: Int)
    /// A conversion is not defined for this pair of types.
    case unsupportedConversion(from: DType, to: DType)
    /// A tensor name appears twice in one state dict.
    case duplicateName(String)

    /// The message, with control characters in names and paths escaped
    /// (``Swift/String/escapedForTerminal``): a file cannot write to the user's terminal through it.
    public var description: String { rawDescription.escapedForTerminal }

    /// The message with names exactly as the file has them.
    var rawDescription: String {
        switch self {
        case .negativeDimension(let shape):
            return "shape \(shape) has a negative dimension"
        case .sizeOverflow(let shape, let dtype):
            return "shape \(shape) of \(dtype) overflows the addressable size"
        case .byteCountMismatch(let name, let expected, let actual):
            return "tensor \(name.map { "'\($0)' " } ?? "")holds \(actual) bytes but its shape and dtype need \(expected)"
        case .unsupportedConversion(let from, let to):
            return "cannot convert \(from) to \(to): only floating-point types convert among themselves"
        case .duplicateName(let name):
            return "tensor name '\(name)' appears twice"
        }
    }
}
