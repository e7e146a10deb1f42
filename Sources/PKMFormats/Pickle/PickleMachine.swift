import Foundation
import PKMTensor

/// Limits the pickle machine checks before growing anything (internal; derived from ``ReaderLimits``).
struct PickleLimits: Sendable {
    /// Most values on the stack (and most open MARKs).
    var maxStackDepth = 1 << 16
    /// Most memo entries.
    var maxMemoEntries: Int
    /// Deepest nesting of containers (lists, tuples, dicts): refuses recursion bombs.
    var maxNestingDepth = 256
    /// Most container elements built in total, counting shared references once per use.
    var maxContainerElements: Int

    init(_ limits: ReaderLimits) {
        let tensors = max(1, limits.maxTensorCount)
        maxMemoEntries = max(1 << 20, tensors.multipliedReportingOverflow(by: 16).overflow ? Int.max : tensors * 16)
        maxContainerElements = max(1 << 22, tensors.multipliedReportingOverflow(by: 64).overflow ? Int.max : tensors * 64)
    }
}

/// A container being built by the machine (internal): shared by reference, as in Python, so that a
/// memoised dict filled after it was memoised is seen filled when fetched again.
///
/// Why `isContained`: once a container is stored inside another, it is never modified again (the
/// pickler always fills a container before storing it). Refusing the opposite keeps `depth` exact
/// and makes reference cycles impossible, so nothing leaks and nothing recurses without bound.
final class PickleContainer {
    enum Kind { case list, tuple, dict, orderedDict }
    let kind: Kind
    var elements: [PickleItem] = []
    var pairs: [(key: PickleItem, value: PickleItem)] = []
    /// 1 + the depth of the deepest container inside.
    var depth = 1
    var isContained = false

    init(_ kind: Kind) { self.kind = kind }

    var kindName: String {
        switch kind {
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .orderedDict: return "OrderedDict"
        }
    }
}

/// One stack or memo slot of the machine (internal).
enum PickleItem {
    /// A finished, immutable value.
    case value(PickleValue)
    /// A container under construction.
    case container(PickleContainer)
    /// An allow-listed global (`module.name`) that may be called.
    case callable(String, PickleGlobal)

    var kindName: String {
        switch self {
        case .value(let value): return value.kindName
        case .container(let container): return container.kindName
        case .callable(let name, _): return name
        }
    }
}

/// A pickle virtual machine for protocols 2–5 that builds only ``PickleValue``s (internal).
///
/// It interprets the opcode subset `torch.save` emits (listed in `schemas/pytorch-pickle.md`);
/// any other opcode is an error naming the byte and its offset. GLOBAL/STACK_GLOBAL names are
/// checked against ``PickleGlobals/allowList`` the moment they are read; REDUCE/NEWOBJ/BUILD act
/// only on allow-listed callables and build values, so nothing is ever imported or executed.
/// Persistent ids (BINPERSID) must be torch's storage tuple.
struct PickleMachine {
    /// The file, for errors.
    let path: String
    /// What is being read (`archive/data.pkl`, `legacy stream`), for errors.
    let context: String
    let limits: PickleLimits
    /// Accept the legacy 6-tuple persistent id `('storage', type, key, location, numel, view_metadata)`.
    let legacyPersistentIDs: Bool

    /// Storages referenced so far, by key.
    private(set) var storages: [String: PickleStorage] = [:]
    /// Storage keys in the order first referenced.
    private(set) var storageOrder: [String] = []
    /// Findings that are not errors (ignored BUILD state such as a state dict's `_metadata`).
    private(set) var diagnostics: [String] = []

    private var stack: [PickleItem] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleItem] = [:]
    private var elementsBuilt = 0
    private var opcodeOffset = 0
    private var baseOffset = 0

    init(path: String, context: String, limits: PickleLimits, legacyPersistentIDs: Bool = false) {
        self.path = path
        self.context = context
        self.limits = limits
        self.legacyPersistentIDs = legacyPersistentIDs
    }

    // MARK: Errors

    private func failure(_ reason: String) -> FormatError {
        .pickle(path: path, offset: opcodeOffset, reason: "\(context): \(reason)")
    }

    // MARK: Running

    /// Runs one pickle starting at the beginning of `bytes` up to its STOP opcode.
    /// - Parameter baseOffset: where `bytes` starts in the file (error offsets are file offsets).
    /// - Returns: the value and the number of bytes the pickle used (bytes after STOP are not read).
    /// - Throws: ``FormatError/pickle(path:offset:reason:)`` for malformed pickles, unsupported
    ///   protocols or opcodes and exceeded limits; ``FormatError/refusedGlobal(path:global:)``.
    mutating func run(_ bytes: Data, baseOffset: Int = 0) throws -> (value: PickleValue, length: Int) {
        stack = []
        marks = []
        memo = [:]
        elementsBuilt = 0
        self.baseOffset = baseOffset
        opcodeOffset = baseOffset
        var cursor = ByteCursor(bytes)
        do {
            let first: UInt8 = try cursor.readLittleEndian()
            guard first == 0x80 else {
                let guess = Self.protocolOneOpcodes.contains(first) ? 1 : 0
                throw failure("protocol \(guess) is not supported; re-save with torch.save (protocol 2+)")
            }
            let proto: UInt8 = try cursor.readLittleEndian()
            guard (2...5).contains(proto) else {
                throw failure("protocol \(proto) is not supported (this reader reads protocols 2–5); re-save with torch.save (protocol 2+)")
            }
            while true {
                opcodeOffset = baseOffset + cursor.offset
                let opcode: UInt8 = try cursor.readLittleEndian()
                if opcode == 0x2E {  // STOP
                    guard stack.count == 1, marks.isEmpty, let top = stack.last else {
                        throw failure("STOP with \(stack.count) values on the stack and \(marks.count) open MARKs (expected exactly one value)")
                    }
                    let value = try freeze(top)
                    stack = []
                    memo = [:]
                    return (value, cursor.offset)
                }
                try step(opcode, &cursor)
            }
        } catch let error as ByteCursorError {
            throw failure("the pickle ends early (\(error)); the file is truncated or damaged")
        }
    }

    /// First bytes that identify a protocol-1 pickle (binary opcodes without a PROTO header).
    private static let protocolOneOpcodes: Set<UInt8> = Set("}])KJMXUTGqhN".utf8)

    // MARK: Stack helpers

    private mutating func push(_ item: PickleItem) throws {
        guard stack.count < limits.maxStackDepth else {
            throw failure("more than \(limits.maxStackDepth) values on the stack")
        }
        stack.append(item)
    }

    private mutating func pop() throws -> PickleItem {
        guard let item = stack.popLast() else { throw failure("stack underflow") }
        if let mark = marks.last, stack.count < mark { throw failure("an opcode reached below its MARK") }
        return item
    }

    /// Pops everything above the topmost MARK.
    private mutating func popToMark() throws -> [PickleItem] {
        guard let mark = marks.popLast() else { throw failure("no MARK on the stack") }
        guard mark <= stack.count else { throw failure("MARK above the stack top") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    private mutating func countElements(_ count: Int) throws {
        let (total, overflow) = elementsBuilt.addingReportingOverflow(count)
        guard !overflow, total <= limits.maxContainerElements else {
            throw failure("more than \(limits.maxContainerElements) container elements")
        }
        elementsBuilt = total
    }

    /// Records that `child` is stored inside `parent` (seals `child`, tracks depth, refuses cycles).
    private func adopt(_ child: PickleItem, into parent: PickleContainer) throws {
        guard case .container(let box) = child else { return }
        guard box !== parent else { throw failure("a \(parent.kindName) contains itself (recursive structures are not supported)") }
        box.isContained = true
        let depth = box.depth + 1
        guard depth <= limits.maxNestingDepth else {
            throw failure("containers nest deeper than \(limits.maxNestingDepth) levels (a recursion bomb?)")
        }
        parent.depth = max(parent.depth, depth)
    }

    private func mutable(_ item: PickleItem, _ kinds: [PickleContainer.Kind], for opcode: String) throws -> PickleContainer {
        guard case .container(let box) = item, kinds.contains(box.kind) else {
            throw failure("\(opcode) on a \(item.kindName)")
        }
        guard !box.isContained else {
            throw failure("\(opcode) on a \(box.kindName) already stored inside another container (unsupported)")
        }
        return box
    }

    private mutating func makeContainer(_ kind: PickleContainer.Kind, elements: [PickleItem] = []) throws -> PickleContainer {
        let box = PickleContainer(kind)
        try countElements(elements.count)
        for element in elements { try adopt(element, into: box) }
        box.elements = elements
        return box
    }

    private mutating func append(_ items: [PickleItem], to target: PickleItem, opcode: String) throws {
        let box = try mutable(target, [.list], for: opcode)
        try countElements(items.count)
        for item in items { try adopt(item, into: box) }
        box.elements.append(contentsOf: items)
    }

    private mutating func setItems(_ items: [PickleItem], in target: PickleItem, opcode: String) throws {
        guard items.count % 2 == 0 else { throw failure("\(opcode) with an odd number of values") }
        let box = try mutable(target, [.dict, .orderedDict], for: opcode)
        try countElements(items.count)
        var index = 0
        while index < items.count {
            try adopt(items[index], into: box)
            try adopt(items[index + 1], into: box)
            box.pairs.append((items[index], items[index + 1]))
            index += 2
        }
    }

    // MARK: Reading arguments

    private func readCount(_ cursor: inout ByteCursor, width: Int) throws -> Int {
        let raw: UInt64
        switch width {
        case 1: raw = UInt64(try cursor.readLittleEndian(UInt8.self))
        case 2: raw = UInt64(try cursor.readLittleEndian(UInt16.self))
        case 4: raw = UInt64(try cursor.readLittleEndian(UInt32.self))
        default: raw = try cursor.readLittleEndian(UInt64.self)
        }
        guard let count = Int(exactly: raw), count <= cursor.remaining else {
            throw failure("a length of \(raw) bytes runs past the end of the pickle (\(cursor.remaining) bytes left)")
        }
        return count
    }

    private func readString(_ cursor: inout ByteCursor, width: Int) throws -> String {
        let count = try readCount(&cursor, width: width)
        let bytes = try cursor.readBytes(count)
        guard let text = String(data: bytes, encoding: .utf8) else { throw failure("a string is not valid UTF-8") }
        return text
    }

    private func readLine(_ cursor: inout ByteCursor) throws -> String {
        var bytes: [UInt8] = []
        while true {
            let byte: UInt8 = try cursor.readLittleEndian()
            if byte == 0x0A { break }
            guard bytes.count < 512 else { throw failure("a GLOBAL name longer than 512 bytes") }
            bytes.append(byte)
        }
        guard let text = String(bytes: bytes, encoding: .utf8) else { throw failure("a GLOBAL name is not valid UTF-8") }
        return text
    }

    /// A little-endian two's-complement integer of `count` bytes (LONG1/LONG4), at most 64 bits.
    private func readLong(_ cursor: inout ByteCursor, count: Int) throws -> Int64 {
        guard count <= 8 else {
            throw failure("an integer of \(count) bytes (wider than 64 bits) is not supported")
        }
        let bytes = try cursor.readBytes(count)
        guard count > 0 else { return 0 }
        var value: UInt64 = 0
        for (index, byte) in bytes.enumerated() { value |= UInt64(byte) << (8 * UInt64(index)) }
        if count < 8, let last = bytes.last, last & 0x80 != 0 {
            value |= UInt64.max << (8 * UInt64(count))  // sign-extend
        }
        return Int64(bitPattern: value)
    }

    private mutating func memoPut(_ index: Int) throws {
        guard let top = stack.last else { throw failure("memo store with an empty stack") }
        if memo[index] == nil, memo.count >= limits.maxMemoEntries {
            throw failure("more than \(limits.maxMemoEntries) memo entries")
        }
        memo[index] = top
    }

    private mutating func memoGet(_ index: Int) throws {
        guard let item = memo[index] else { throw failure("memo entry \(index) is read before it is stored") }
        try push(item)
    }

    private mutating func global(module: String, name: String) throws {
        guard let meaning = PickleGlobals.lookup(module: module, name: name) else {
            throw FormatError.refusedGlobal(path: path, global: "\(module).\(name)")
        }
        try push(.callable("\(module).\(name)", meaning))
    }

    // MARK: Opcodes

    private mutating func step(_ opcode: UInt8, _ cursor: inout ByteCursor) throws {
        switch opcode {
        case 0x80:  // PROTO inside a pickle
            let proto: UInt8 = try cursor.readLittleEndian()
            guard (2...5).contains(proto) else { throw failure("protocol \(proto) is not supported") }
        case 0x95:  // FRAME: framing does not change meaning; check the length is present
            _ = try readCount(&cursor, width: 8)
        case 0x28:  // MARK
            guard marks.count < limits.maxStackDepth else { throw failure("more than \(limits.maxStackDepth) open MARKs") }
            marks.append(stack.count)
        case 0x30:  // POP
            _ = try pop()
        case 0x31:  // POP_MARK
            _ = try popToMark()
        case 0x32:  // DUP
            guard let top = stack.last else { throw failure("DUP with an empty stack") }
            try push(top)
        case 0x4E: try push(.value(.none))  // NONE
        case 0x88: try push(.value(.bool(true)))  // NEWTRUE
        case 0x89: try push(.value(.bool(false)))  // NEWFALSE
        case 0x4B: try push(.value(.int(Int64(try cursor.readLittleEndian(UInt8.self)))))  // BININT1
        case 0x4D: try push(.value(.int(Int64(try cursor.readLittleEndian(UInt16.self)))))  // BININT2
        case 0x4A: try push(.value(.int(Int64(Int32(bitPattern: try cursor.readLittleEndian(UInt32.self))))))  // BININT
        case 0x8A:  // LONG1
            let count = Int(try cursor.readLittleEndian(UInt8.self))
            try push(.value(.int(try readLong(&cursor, count: count))))
        case 0x8B:  // LONG4
            let count = try readCount(&cursor, width: 4)
            try push(.value(.int(try readLong(&cursor, count: count))))
        case 0x47:  // BINFLOAT (big-endian)
            let bits: UInt64 = try cursor.readLittleEndian()
            try push(.value(.float(Double(bitPattern: bits.byteSwapped))))
        case 0x8C: try push(.value(.string(try readString(&cursor, width: 1))))  // SHORT_BINUNICODE
        case 0x58: try push(.value(.string(try readString(&cursor, width: 4))))  // BINUNICODE
        case 0x8D: try push(.value(.string(try readString(&cursor, width: 8))))  // BINUNICODE8
        case 0x43: try push(.value(.bytes(try cursor.readBytes(try readCount(&cursor, width: 1)))))  // SHORT_BINBYTES
        case 0x42: try push(.value(.bytes(try cursor.readBytes(try readCount(&cursor, width: 4)))))  // BINBYTES
        case 0x8E, 0x96: try push(.value(.bytes(try cursor.readBytes(try readCount(&cursor, width: 8)))))  // BINBYTES8, BYTEARRAY8
        case 0x29: try push(.container(try makeContainer(.tuple)))  // EMPTY_TUPLE
        case 0x5D: try push(.container(try makeContainer(.list)))  // EMPTY_LIST
        case 0x7D: try push(.container(try makeContainer(.dict)))  // EMPTY_DICT
        case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
            let count = Int(opcode - 0x84)
            guard stack.count - (marks.last ?? 0) >= count else { throw failure("TUPLE\(count) with too few values") }
            let items = Array(stack.suffix(count))
            stack.removeLast(count)
            try push(.container(try makeContainer(.tuple, elements: items)))
        case 0x74:  // TUPLE
            try push(.container(try makeContainer(.tuple, elements: try popToMark())))
        case 0x6C:  // LIST
            try push(.container(try makeContainer(.list, elements: try popToMark())))
        case 0x64:  // DICT
            let items = try popToMark()
            let box = try makeContainer(.dict)
            try push(.container(box))
            try setItems(items, in: .container(box), opcode: "DICT")
        case 0x61:  // APPEND
            let item = try pop()
            guard let target = stack.last else { throw failure("APPEND with no list") }
            try append([item], to: target, opcode: "APPEND")
        case 0x65:  // APPENDS
            let items = try popToMark()
            guard let target = stack.last else { throw failure("APPENDS with no list") }
            try append(items, to: target, opcode: "APPENDS")
        case 0x73:  // SETITEM
            let value = try pop()
            let key = try pop()
            guard let target = stack.last else { throw failure("SETITEM with no dict") }
            try setItems([key, value], in: target, opcode: "SETITEM")
        case 0x75:  // SETITEMS
            let items = try popToMark()
            guard let target = stack.last else { throw failure("SETITEMS with no dict") }
            try setItems(items, in: target, opcode: "SETITEMS")
        case 0x71: try memoPut(Int(try cursor.readLittleEndian(UInt8.self)))  // BINPUT
        case 0x72: try memoPut(Int(try cursor.readLittleEndian(UInt32.self)))  // LONG_BINPUT
        case 0x94: try memoPut(memo.count)  // MEMOIZE
        case 0x68: try memoGet(Int(try cursor.readLittleEndian(UInt8.self)))  // BINGET
        case 0x6A: try memoGet(Int(try cursor.readLittleEndian(UInt32.self)))  // LONG_BINGET
        case 0x63:  // GLOBAL
            let module = try readLine(&cursor)
            let name = try readLine(&cursor)
            try global(module: module, name: name)
        case 0x93:  // STACK_GLOBAL
            let name = try pop()
            let module = try pop()
            guard case .value(.string(let moduleText)) = module, case .value(.string(let nameText)) = name else {
                throw failure("STACK_GLOBAL needs two strings, found \(module.kindName) and \(name.kindName)")
            }
            try global(module: moduleText, name: nameText)
        case 0x52:  // REDUCE
            let arguments = try pop()
            let callable = try pop()
            try push(try call(callable, arguments, opcode: "REDUCE"))
        case 0x81:  // NEWOBJ
            let arguments = try pop()
            let callable = try pop()
            try push(try call(callable, arguments, opcode: "NEWOBJ"))
        case 0x62:  // BUILD
            let state = try pop()
            guard let target = stack.last else { throw failure("BUILD with no object") }
            try build(target, state: state)
        case 0x51:  // BINPERSID
            let identifier = try pop()
            try push(.value(.storage(try persistentLoad(identifier))))
        default:
            throw failure(String(format: "opcode 0x%02X is not supported (only the subset torch.save writes is read)", opcode))
        }
    }

    // MARK: Calls

    private func tupleElements(_ item: PickleItem, for name: String) throws -> [PickleItem] {
        guard case .container(let box) = item, box.kind == .tuple else {
            throw failure("\(name) called with a \(item.kindName) instead of an argument tuple")
        }
        return box.elements
    }

    private func integer(_ item: PickleItem, _ what: String) throws -> Int {
        guard case .value(.int(let raw)) = item else { throw failure("\(what) is a \(item.kindName), not an int") }
        guard let value = Int(exactly: raw) else { throw failure("\(what) \(raw) does not fit in memory") }
        return value
    }

    private func integers(_ item: PickleItem, _ what: String) throws -> [Int] {
        switch item {
        case .value(.size(let dimensions)): return dimensions
        case .container(let box) where box.kind == .tuple || box.kind == .list:
            return try box.elements.map { try integer($0, "an element of \(what)") }
        default:
            throw failure("\(what) is a \(item.kindName), not a tuple of ints")
        }
    }

    private mutating func call(_ callable: PickleItem, _ arguments: PickleItem, opcode: String) throws -> PickleItem {
        guard case .callable(let name, let meaning) = callable else {
            throw failure("\(opcode) calls a \(callable.kindName), which is not callable")
        }
        let args = try tupleElements(arguments, for: name)
        switch meaning {
        case .rebuildTensorV2, .rebuildTensor:
            let expected = meaning == .rebuildTensor ? [4] : [6, 7]
            guard expected.contains(args.count) else { throw failure("\(name) with \(args.count) arguments") }
            guard case .value(.storage(let storage)) = args[0] else {
                throw failure("\(name)'s first argument is a \(args[0].kindName), not a storage")
            }
            var requiresGrad = false
            if args.count > 4, case .value(.bool(let flag)) = args[4] { requiresGrad = flag }
            let tensor = PickleTensor(storage: storage, storageOffset: try integer(args[1], "storage_offset"),
                                      shape: try integers(args[2], "size"), strides: try integers(args[3], "stride"),
                                      requiresGrad: requiresGrad)
            return .value(.tensor(tensor))
        case .rebuildParameter, .rebuildParameterWithState:
            guard args.count == (meaning == .rebuildParameter ? 3 : 4), case .value(.tensor(let tensor)) = args[0] else {
                throw failure("\(name) needs (tensor, requires_grad, hooks\(meaning == .rebuildParameter ? "" : ", state")), found \(args.count) arguments")
            }
            return .value(.tensor(tensor))
        case .orderedDict:
            let box = try makeContainer(.orderedDict)
            if let items = args.first {
                guard args.count == 1, case .container(let source) = items, source.kind == .list || source.kind == .tuple else {
                    throw failure("\(name) with arguments other than () or (list of pairs,)")
                }
                var flat: [PickleItem] = []
                for pair in source.elements {
                    guard case .container(let tuple) = pair, tuple.kind == .tuple, tuple.elements.count == 2 else {
                        throw failure("\(name) with an element that is not a (key, value) pair")
                    }
                    flat.append(contentsOf: tuple.elements)
                }
                try setItems(flat, in: .container(box), opcode: name)
            }
            return .container(box)
        case .size:
            guard args.count == 1 else { throw failure("\(name) with \(args.count) arguments") }
            let dimensions = try integers(args[0], "torch.Size")
            return .value(.size(dimensions))
        case .device:
            guard case .value(.string(let kind))? = args.first else { throw failure("\(name) without a device string") }
            if args.count == 2, case .value(.int(let index)) = args[1] { return .value(.device("\(kind):\(index)")) }
            guard args.count == 1 else { throw failure("\(name) with \(args.count) arguments") }
            return .value(.device(kind))
        case .storageType, .dtype:
            throw failure("\(opcode) calls \(name), which a checkpoint only names, never calls")
        }
    }

    private mutating func build(_ target: PickleItem, state: PickleItem) throws {
        switch target {
        case .container(let box) where box.kind == .dict || box.kind == .orderedDict:
            // A Module.state_dict() OrderedDict carries its `_metadata` attribute this way.
            var names: [String] = []
            if case .container(let stateBox) = state {
                for pair in stateBox.pairs { if case .value(.string(let key)) = pair.key { names.append(key) } }
            }
            diagnostics.append("\(context): ignored the attributes of a \(box.kindName) (\(names.isEmpty ? state.kindName : names.joined(separator: ", ")))")
        case .value(.tensor):
            diagnostics.append("\(context): ignored the Python state of a tensor")
        default:
            throw failure("BUILD on a \(target.kindName) is not supported")
        }
    }

    // MARK: Persistent ids

    /// torch's storage persistent id: `('storage', storage_type, key, location, numel)`, plus a
    /// sixth `view_metadata` (always None in practice) in the legacy stream.
    private mutating func persistentLoad(_ identifier: PickleItem) throws -> PickleStorage {
        let shape = "('storage', storage_type, key, location, numel)"
        guard case .container(let box) = identifier, box.kind == .tuple else {
            throw failure("a persistent id is a \(identifier.kindName); only torch's storage tuple \(shape) is accepted")
        }
        let fields = box.elements
        let counts = legacyPersistentIDs ? [5, 6] : [5]
        guard counts.contains(fields.count), case .value(.string("storage")) = fields[0] else {
            throw failure("a persistent id with \(fields.count) fields; only torch's storage tuple \(shape) is accepted")
        }
        if fields.count == 6, case .value(.none) = fields[5] {} else if fields.count == 6 {
            throw failure("a legacy storage view (view_metadata is not None) is not supported; re-save with a current torch.save")
        }
        guard case .callable(let typeName, .storageType(let dtype)) = fields[1] else {
            throw failure("a persistent id whose storage type is a \(fields[1].kindName)")
        }
        guard case .value(.string(let key)) = fields[2], case .value(let locationValue) = fields[3] else {
            throw failure("a persistent id whose key is a \(fields[2].kindName)")
        }
        var location = ""
        switch locationValue {
        case .string(let text): location = text
        case .device(let text): location = text
        default: throw failure("a persistent id whose location is a \(locationValue.kindName)")
        }
        let count = try integer(fields[4], "a storage's element count")
        guard count >= 0 else { throw failure("storage '\(key)' has a negative element count \(count)") }
        let storage = PickleStorage(key: key, typeName: typeName, dtype: dtype, location: location, elementCount: count)
        if let known = storages[key] {
            guard known.typeName == storage.typeName, known.elementCount == storage.elementCount else {
                throw failure("storage '\(key)' is referenced as \(known.typeName)[\(known.elementCount)] and as \(typeName)[\(count)]")
            }
        } else {
            storages[key] = storage
            storageOrder.append(key)
        }
        return storage
    }

    // MARK: Freezing

    /// Turns the finished item into a value; shared references are copied, within the element budget.
    ///
    /// Why the budget follows what was built: shared references (memo GET, DUP) let a few hundred
    /// bytes describe 2ⁿ elements ("billion laughs"); with the flat limit alone a 400-byte pickle
    /// expanded to 64 M elements (1 GB, 7 s) before being refused (issue 18). A real state dict shares
    /// only small tuples (sizes, strides), so the expansion may be 8 × the elements the pickle
    /// really built (at least 65,536), and never more than ``PickleLimits/maxContainerElements``.
    private mutating func freeze(_ item: PickleItem) throws -> PickleValue {
        let (scaled, overflow) = elementsBuilt.multipliedReportingOverflow(by: 8)
        var budget = min(limits.maxContainerElements, max(1 << 16, overflow ? Int.max : scaled))
        let allowed = budget
        do {
            return try freeze(item, budget: &budget)
        } catch let error as FormatError {
            if case .pickle(_, _, let reason) = error, reason.hasSuffix(Self.expansionMarker) {
                throw failure("shared references (memo GET / DUP) expand the \(elementsBuilt) container elements built to more than \(allowed): a 'billion laughs' pickle, refused before expanding it")
            }
            throw error
        }
    }

    private static let expansionMarker = "container elements (expansion)"

    private func freeze(_ item: PickleItem, budget: inout Int) throws -> PickleValue {
        switch item {
        case .value(let value): return value
        case .callable(let name, _): return .global(name)
        case .container(let box):
            budget -= box.elements.count + 2 * box.pairs.count
            guard budget >= 0 else {
                throw failure(Self.expansionMarker)
            }
            switch box.kind {
            case .list: return .list(try box.elements.map { try freeze($0, budget: &budget) })
            case .tuple: return .tuple(try box.elements.map { try freeze($0, budget: &budget) })
            case .dict, .orderedDict:
                let entries = try box.pairs.map {
                    PickleDictEntry(key: try freeze($0.key, budget: &budget), value: try freeze($0.value, budget: &budget))
                }
                return box.kind == .dict ? .dict(entries) : .orderedDict(entries)
            }
        }
    }
}
