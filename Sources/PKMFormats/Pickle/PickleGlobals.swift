import Foundation
import PKMTensor

/// What an allow-listed pickle global stands for (internal).
///
/// A pickle names classes and functions by `module.name` (the GLOBAL and STACK_GLOBAL opcodes) and
/// then calls them (REDUCE, NEWOBJ). Python's unpickler imports and calls whatever is named, which
/// is how a malicious checkpoint runs code. The pickle machine instead maps each name through
/// ``PickleGlobals/allowList`` to one of these cases and refuses every other name, so a call can
/// only ever construct a ``PickleValue``.
enum PickleGlobal: Sendable, Equatable {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    case rebuildTensorV2
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)` (torch < 1.0).
    case rebuildTensor
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)`: an `nn.Parameter`, kept as its tensor.
    case rebuildParameter
    /// `torch._utils._rebuild_parameter_with_state(data, requires_grad, hooks, state)`.
    case rebuildParameterWithState
    /// A typed storage class (`torch.FloatStorage`, …); nil: a storage this build cannot hold.
    case storageType(DType?)
    /// `collections.OrderedDict`.
    case orderedDict
    /// `torch.Size`.
    case size
    /// `torch.device`.
    case device
    /// A `torch.dtype` singleton (`torch.float32`, …), by name.
    case dtype(String)
}

/// The allow-list of globals a PyTorch checkpoint may name, declared as data.
///
/// This is every name `torch.save` writes for a state dict, a Lightning/XLM-style checkpoint dict
/// or an `nn.Parameter` (read from torch 2.x `torch/serialization.py`, `torch/_utils.py` and
/// `torch/storage.py`). Anything else (`posix.system`, `builtins.eval`, `subprocess.Popen`,
/// model classes pickled with `torch.save(model)`) is refused with
/// ``FormatError/refusedGlobal(path:global:)`` before anything is built.
enum PickleGlobals {
    /// `module.name` → meaning.
    static let allowList: [String: PickleGlobal] = {
        var table: [String: PickleGlobal] = [
            "torch._utils._rebuild_tensor_v2": .rebuildTensorV2,
            "torch._utils._rebuild_tensor": .rebuildTensor,
            "torch._utils._rebuild_parameter": .rebuildParameter,
            "torch._utils._rebuild_parameter_with_state": .rebuildParameterWithState,
            "collections.OrderedDict": .orderedDict,
            "torch.Size": .size,
            "torch.device": .device,
        ]
        for (name, dtype) in storageTypes { table["torch.\(name)"] = .storageType(dtype) }
        for name in unsupportedStorageTypes { table["torch.\(name)"] = .storageType(nil) }
        for name in dtypeNames { table["torch.\(name)"] = .dtype(name) }
        return table
    }()

    /// Typed storage classes torch writes in persistent ids, and their element types.
    /// `UntypedStorage` holds bytes.
    static let storageTypes: [(String, DType)] = [
        ("FloatStorage", .float32), ("HalfStorage", .float16), ("BFloat16Storage", .bfloat16),
        ("DoubleStorage", .float64), ("LongStorage", .int64), ("IntStorage", .int32),
        ("ShortStorage", .int16), ("CharStorage", .int8), ("ByteStorage", .uint8),
        ("BoolStorage", .bool), ("UntypedStorage", .uint8),
    ]

    /// Storage classes torch can write whose element types pkm-convert does not hold: accepted
    /// while parsing (so the error can name the tensor), refused when a tensor uses one.
    static let unsupportedStorageTypes: [String] = [
        "ComplexFloatStorage", "ComplexDoubleStorage", "ComplexHalfStorage",
        "QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage",
    ]

    /// `torch.dtype` names that may appear as values (e.g. a saved config's `torch_dtype`).
    static let dtypeNames: [String] = [
        "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool",
        "complex64", "complex128",
    ]

    /// The meaning of `module.name`, or nil when it is not allowed.
    static func lookup(module: String, name: String) -> PickleGlobal? {
        allowList["\(module).\(name)"]
    }
}
