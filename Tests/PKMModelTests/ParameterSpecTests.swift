import Foundation
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMModel

/// One architecture whose parameter list and loader must agree.
struct SpecCase: Sendable, CustomTestStringConvertible {
    let name: String
    let config: ModelConfig
    var testDescription: String { name }

    /// The synthetic config (hidden 16, 3 layers; memory N 8, H 2, k 4, K 8, V 16) with memories on
    /// `layers` and its memory fields changed by `change`.
    static func memory(_ name: String, layers: [Int] = [1], modes: [MemoryMode] = [.residual],
                       type: ModelConfig.ModelType = .bert, _ change: (inout MemoryConfig) -> Void = { _ in }) -> SpecCase {
        var config = SyntheticModel.config(type: type, memoryLayers: layers, modes: modes)
        if var memory = config.memory {
            change(&memory)
            config.memory = memory
        }
        return SpecCase(name: name, config: config)
    }

    static let all: [SpecCase] = [
        SpecCase(name: "plain BERT", config: SyntheticModel.config()),
        SpecCase(name: "plain RoBERTa", config: SyntheticModel.config(type: .roberta)),
        memory("replace", modes: [.replace]),
        memory("residual", modes: [.residual]),
        memory("after", modes: [.after]),
        memory("three memories, one per mode", layers: [0, 1, 2], modes: [.replace, .residual, .after]),
        memory("batchnorm without query bias", layers: [0, 2], modes: [.after, .replace]) { $0.queryBias = false },
        memory("no query norm") { $0.queryNorm = .none },
        memory("layernorm query norm, input and output norms, L2") {
            $0.queryNorm = .layernorm; $0.inputNorm = true; $0.outputNorm = true; $0.queryNormalize = .l2
        },
        memory("query MLP with batchnorm") { $0.queryLayerSizes = [12, 10] },
        memory("query MLP without norm or bias") { $0.queryLayerSizes = [12]; $0.queryNorm = .none; $0.queryBias = false },
        memory("linear value projection, V 12") { $0.valueDimension = 12; $0.valueProjection = .linear },
        memory("swiglu value projection and sigmoid gate, V 12") {
            $0.valueDimension = 12; $0.valueProjection = .swiglu; $0.outputGate = .sigmoid; $0.queryNorm = .none
        },
        memory("sigmoid gate") { $0.outputGate = .sigmoid },
        memory("head permutations", layers: [0, 2], modes: [.residual, .after]) { $0.slotMap = .headPermutations },
        memory("modulo slot map") { $0.slotMap = .modulo; $0.moduloSize = 20 },
        memory("shared values owned by the middle memory", layers: [0, 1, 2], modes: [.after, .residual, .replace]) {
            $0.sharedValues = 1
        },
        memory("shared values, head permutations, RoBERTa", layers: [2, 0], modes: [.residual, .after], type: .roberta) {
            $0.sharedValues = 2; $0.slotMap = .headPermutations; $0.queryNorm = .layernorm
        },
    ]
}

/// The spec list (`parameterSpecs`, which import mapping, graft and export read) and the loader are
/// derived from one declaration per layer: these tests hold them to each other.
@Suite("Parameter specs drive loading")
struct ParameterSpecTests {
    /// A state dict with exactly `specs`: float32 weights, int64 buffers (valid slot ids for
    /// `head_permutations`).
    static func stateDict(_ specs: [ParameterSpec], config: ModelConfig) throws -> StateDict {
        var dict = StateDict()
        for spec in specs { try dict.insert(tensor(for: spec, shape: spec.shape, config: config), named: spec.name) }
        return dict
    }

    static func tensor(for spec: ParameterSpec, shape: [Int], config: ModelConfig) throws -> Tensor {
        let count = shape.reduce(1, *)
        if spec.isInteger || !spec.isUsed {
            let rows = config.memory?.valueRowCount ?? 1
            return try Tensor(int64: (0..<count).map { Int64(($0 * 5) % rows) }, shape: shape)
        }
        return try Tensor(float32: (0..<count).map { 0.5 + Float($0 % 7) * 0.1 }, shape: shape)
    }

    /// Loads `dict`, returning the error (nil when loading succeeds) and every name the loader asked for.
    static func load(_ config: ModelConfig, _ dict: StateDict) -> (error: ModelError?, looked: Set<String>) {
        final class Names { var looked: Set<String> = [] }
        let names = Names()
        do {
            _ = try PKMBertModel(config: config) { name in
                names.looked.insert(name)
                return dict[name]
            }
            return (nil, names.looked)
        } catch let error as ModelError {
            return (error, names.looked)
        } catch {
            Issue.record("not a ModelError: \(error)")
            return (nil, names.looked)
        }
    }

    @Test("a state dict holding exactly the specs loads, and the loader reads exactly the used specs", arguments: SpecCase.all)
    func loadsExactlyItsSpecs(_ testCase: SpecCase) throws {
        let config = testCase.config
        try config.validate()
        let specs = PKMBertModel.parameterSpecs(for: config)
        #expect(Set(specs.map(\.name)).count == specs.count, "a name is listed twice")
        let (error, looked) = Self.load(config, try Self.stateDict(specs, config: config))
        #expect(error == nil, "\(error.map(String.init(describing:)) ?? "")")
        let used = Set(specs.filter(\.isUsed).map(\.name))
        #expect(looked.subtracting(used).sorted() == [], "the loader reads names the spec list does not declare as used")
        #expect(used.subtracting(looked).sorted() == [], "the spec list declares used tensors the loader never reads")
    }

    @Test("dropping or reshaping any used spec fails naming it; unused specs may be dropped", arguments: SpecCase.all)
    func eachSpecIsChecked(_ testCase: SpecCase) throws {
        let config = testCase.config
        let specs = PKMBertModel.parameterSpecs(for: config)
        let complete = try Self.stateDict(specs, config: config)
        for spec in specs {
            var dropped = complete
            _ = dropped.remove(spec.name)
            let dropError = Self.load(config, dropped).error
            guard spec.isUsed else {
                #expect(dropError == nil, "dropping unused \(spec.name): \(dropError.map(String.init(describing:)) ?? "")")
                continue
            }
            if case .missingTensor(let name) = dropError {
                #expect(name == spec.name, "dropping \(spec.name) reported \(name)")
            } else {
                Issue.record("dropping \(spec.name) gave \(dropError.map(String.init(describing:)) ?? "no error")")
            }

            var reshaped = complete
            let wrongShape = [spec.shape.reduce(1, *) + 1]
            reshaped.set(try Self.tensor(for: spec, shape: wrongShape, config: config), named: spec.name)
            if case .shapeMismatch(let name, let expected, let actual) = Self.load(config, reshaped).error {
                #expect(name == spec.name && expected == spec.shape && actual == wrongShape, "reshaping \(spec.name) reported \(name) \(expected) \(actual)")
            } else {
                Issue.record("reshaping \(spec.name) did not give a shape mismatch")
            }

            if spec.isInteger {
                var floated = complete
                floated.set(try Tensor(float32: [Float](repeating: 0, count: spec.shape.reduce(1, *)), shape: spec.shape), named: spec.name)
                if case .invalidTensor(let name, _) = Self.load(config, floated).error {
                    #expect(name == spec.name)
                } else {
                    Issue.record("a float \(spec.name) was not refused")
                }
            }
        }
    }

    @Test("a memory's spec list and its loader agree on their own, under a prefix")
    func memoryAlone() throws {
        var memory = try #require(SyntheticModel.config(memoryLayers: [0], modes: [.residual]).memory)
        memory.queryLayerSizes = [6]
        memory.inputNorm = true
        memory.outputGate = .sigmoid
        let specs = ProductKeyMemory.parameterSpecs(prefix: "m.", config: memory, inputWidth: 16)
        let config = SyntheticModel.config()
        let dict = try Self.stateDict(specs, config: config)
        final class Names { var looked: Set<String> = [] }
        let names = Names()
        _ = try ProductKeyMemory(prefix: "m.", config: memory, inputWidth: 16, loader: WeightLoader { names.looked.insert($0); return dict[$0] })
        #expect(names.looked == Set(specs.filter(\.isUsed).map(\.name)))
        // Reading another memory's table: its own `values` is neither listed nor read.
        let borrowing = ProductKeyMemory.parameterSpecs(prefix: "b.", config: memory, inputWidth: 16, ownsValues: false)
        #expect(!borrowing.contains { $0.name.hasSuffix(ParameterNames.Memory.values) })
        var shared = try Self.stateDict(borrowing, config: config)
        shared.set(try #require(dict["m." + ParameterNames.Memory.values]), named: "m." + ParameterNames.Memory.values)
        _ = try ProductKeyMemory(prefix: "b.", valuesPrefix: "m.", config: memory, inputWidth: 16, loader: WeightLoader { shared[$0] })
    }
}
