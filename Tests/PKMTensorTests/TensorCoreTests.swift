import Foundation
import Testing
@testable import PKMTensor

@Suite("Tensor core")
struct TensorCoreTests {
    @Test("byte counts are checked against shape and dtype")
    func byteCountChecked() {
        #expect(throws: TensorError.byteCountMismatch(name: "w", expected: 24, actual: 20)) {
            try Tensor(dtype: .float32, shape: [2, 3], storage: Data(count: 20), name: "w")
        }
        #expect(throws: TensorError.negativeDimension(shape: [2, -1])) {
            try Tensor(dtype: .float32, shape: [2, -1], storage: Data())
        }
    }

    @Test("overflowing shapes are rejected without trapping")
    func overflow() {
        #expect(ShapeMath.byteCount([Int.max / 2, 3], dtype: .uint8) == nil)
        #expect(ShapeMath.byteCount([1 << 40, 1 << 30], dtype: .float32) == nil)
        #expect(ShapeMath.byteCount([1 << 20, 1 << 20], dtype: .float64) == 1 << 43)
        #expect(ShapeMath.elementCount([]) == 1)
        #expect(ShapeMath.elementCount([3, 0, 5]) == 0)
        #expect(throws: TensorError.sizeOverflow(shape: [Int.max, 2], dtype: .int8)) {
            try ShapeMath.checkedByteCount([Int.max, 2], dtype: .int8)
        }
    }

    @Test("dtype names parse from safetensors codes and display names")
    func dtypeParsing() {
        for dtype in DType.allCases {
            #expect(DType(parsing: dtype.rawValue) == dtype)
            #expect(DType(parsing: dtype.displayName) == dtype)
        }
        #expect(DType(parsing: "bf16") == .bfloat16)
        #expect(DType(parsing: "F8_E4M3") == nil)
    }

    @Test("state dict keeps order and refuses duplicate names")
    func stateDict() throws {
        var dict = StateDict()
        try dict.insert(Tensor(float32: [1], shape: [1]), named: "b")
        try dict.insert(Tensor(float32: [2], shape: [1]), named: "a")
        #expect(dict.names == ["b", "a"])
        #expect(throws: TensorError.duplicateName("a")) { try dict.insert(Tensor(float32: [3], shape: [1]), named: "a") }
        dict.remove("b")
        #expect(dict.names == ["a"])
        #expect(dict.totalBytes == 4)
    }

    @Test("byte cursor reads little-endian and reports truncation")
    func byteCursor() throws {
        var cursor = ByteCursor(Data([1, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]))
        #expect(try cursor.readLength() == 1)
        #expect(try cursor.readLittleEndian(UInt16.self) == 0xFFFF)
        #expect(throws: ByteCursorError.truncated(offset: 10, needed: 1, available: 0)) { try cursor.readBytes(1) }
        var huge = ByteCursor(Data([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))
        #expect(throws: ByteCursorError.lengthOverflow(offset: 0, value: UInt64.max)) { try huge.readLength() }
    }

    @Test("values widen from every dtype")
    func widening() throws {
        let ints = try Tensor(int64: [-3, 0, 7], shape: [3])
        #expect(ints.floatValues() == [-3, 0, 7])
        #expect(ints.int64Values() == [-3, 0, 7])
        let bools = try Tensor(dtype: .bool, shape: [2], storage: Data([1, 0]))
        #expect(bools.floatValues() == [1, 0])
        let bf16 = try Tensor(dtype: .bfloat16, shape: [1], storage: Data([0x80, 0x3F]))
        #expect(bf16.floatValues() == [1])
    }
}
