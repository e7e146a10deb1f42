import Foundation
import PKMTensor

/// A value rebuilt from a PyTorch pickle: plain data and the few typed objects a checkpoint holds.
///
/// The pickle machine (`PickleMachine.swift`) can only construct these cases, so reading a pickle
/// never runs code: every class or function a pickle names is looked up in the allow-list
/// (`PickleGlobals.swift`) and turned into one of these values, or refused. The format is
/// specified in `schemas/pytorch-pickle.md`.
public indirect enum PickleValue: Sendable, Equatable {
    /// Python `None`.
    case none
    /// Python `bool`.
    case bool(Bool)
    /// Python `int` that fits in 64 bits (wider integers are refused).
    case int(Int64)
    /// Python `float`.
    case float(Double)
    /// Python `str`.
    case string(String)
    /// Python `bytes` or `bytearray`.
    case bytes(Data)
    /// Python `list`.
    case list([PickleValue])
    /// Python `tuple`.
    case tuple([PickleValue])
    /// Python `dict`, in insertion order.
    case dict([PickleDictEntry])
    /// `collections.OrderedDict` (what `Module.state_dict()` returns), in order.
    case orderedDict([PickleDictEntry])
    /// A tensor rebuilt by `torch._utils._rebuild_tensor_v2` (or a parameter wrapping one).
    case tensor(PickleTensor)
    /// A storage reference (a pickle persistent id) not wrapped in a tensor.
    case storage(PickleStorage)
    /// `torch.Size`.
    case size([Int])
    /// `torch.device`, e.g. `cpu` or `cuda:0`.
    case device(String)
    /// A `torch.dtype` object, by its name (`float32`, `bfloat16`, …).
    case dtype(String)
    /// An allow-listed class or function referenced as a value but not called (e.g. `torch.FloatStorage`).
    case global(String)

    /// The entries of a dict or OrderedDict, nil for anything else.
    public var dictEntries: [PickleDictEntry]? {
        switch self {
        case .dict(let entries), .orderedDict(let entries): return entries
        default: return nil
        }
    }

    /// The value under a string key of a dict or OrderedDict.
    public subscript(key: String) -> PickleValue? {
        dictEntries?.first { $0.key == .string(key) }?.value
    }

    /// A short name of the case for messages (`int`, `dict`, `tensor`, …).
    public var kindName: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .orderedDict: return "OrderedDict"
        case .tensor: return "tensor"
        case .storage: return "storage"
        case .size: return "torch.Size"
        case .device: return "torch.device"
        case .dtype: return "torch.dtype"
        case .global(let name): return name
        }
    }

    /// The value as JSON text when it is made only of None, bools, ints, finite floats, strings and
    /// lists/tuples of those (tuples become arrays); nil otherwise. Dicts are left out on purpose:
    /// callers use this for flat option tables such as XLM's `params`.
    public var scalarJSON: String? {
        switch self {
        case .none: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .int(let value): return String(value)
        case .float(let value): return value.isFinite ? "\(value)" : nil
        case .string(let text): return JSONText.quoted(text)
        case .list(let elements), .tuple(let elements):
            var parts: [String] = []
            for element in elements {
                guard let text = element.scalarJSON else { return nil }
                parts.append(text)
            }
            return "[" + parts.joined(separator: ",") + "]"
        default: return nil
        }
    }
}

/// One key/value pair of a pickled dict.
public struct PickleDictEntry: Sendable, Equatable {
    /// The key (usually a string).
    public var key: PickleValue
    /// The value.
    public var value: PickleValue

    public init(key: PickleValue, value: PickleValue) {
        self.key = key
        self.value = value
    }

    /// The key as text: the string itself, or a decimal int (XLM's `dico_id2word` has int keys).
    public var keyText: String? {
        switch key {
        case .string(let text): return text
        case .int(let value): return String(value)
        default: return nil
        }
    }
}

/// A storage a checkpoint refers to by key: the persistent id `('storage', type, key, location, numel)`.
///
/// In the zip container its bytes are the entry `<archive>/data/<key>`; in the legacy stream they
/// follow the pickles, in the order of the pickled key list.
public struct PickleStorage: Sendable, Equatable, Hashable {
    /// The storage key (`"0"`, `"1"`, … in files torch writes).
    public var key: String
    /// The storage class named in the pickle, e.g. `torch.FloatStorage`.
    public var typeName: String
    /// The element type, nil for storage types this build cannot hold (complex, quantized).
    public var dtype: DType?
    /// Where the storage lived when saved (`cpu`, `cuda:0`); informational only.
    public var location: String
    /// Number of elements of `dtype` the storage holds.
    public var elementCount: Int

    public init(key: String, typeName: String, dtype: DType?, location: String, elementCount: Int) {
        self.key = key
        self.typeName = typeName
        self.dtype = dtype
        self.location = location
        self.elementCount = elementCount
    }
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage.
///
/// Element `(i₀, …, iₙ₋₁)` is storage element `storageOffset + Σ iₖ·strides[k]` (offsets and
/// strides in elements, not bytes).
public struct PickleTensor: Sendable, Equatable {
    /// The storage the view reads.
    public var storage: PickleStorage
    /// First element of the view, in elements from the start of the storage.
    public var storageOffset: Int
    /// The dimensions.
    public var shape: [Int]
    /// Elements to step in the storage per index of each dimension.
    public var strides: [Int]
    /// `requires_grad` as saved (informational).
    public var requiresGrad: Bool

    public init(storage: PickleStorage, storageOffset: Int, shape: [Int], strides: [Int], requiresGrad: Bool) {
        self.storage = storage
        self.storageOffset = storageOffset
        self.shape = shape
        self.strides = strides
        self.requiresGrad = requiresGrad
    }
}
