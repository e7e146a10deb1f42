import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
import PKMTestSupport
import Testing
import PKMPipeline

/// A reference file is input the user hands over: every output it holds is compared or named, its inputs and
/// tolerance attributes are checked, and what is wrong in it is blamed on it (issue 18, item 11).
@Suite("Reference files are checked, not trusted")
struct ReferenceFileTests {
    static let folder = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/bert_residual")
    static let checkpoint = folder.appendingPathComponent("model.safetensors")

    /// The bundled reference, changed by `edit`, written as a schemas/pkm-checkpoints.md §5 HDF5 file.
    static func reference(in folder: TemporaryFolder, named name: String = "reference.h5",
                          _ edit: (inout StateDict) throws -> Void) throws -> URL {
        var dict = try Checkpoints.open(Self.folder.appendingPathComponent("reference.h5")).readAll()
        try edit(&dict)
        var slashed = StateDict(metadata: dict.metadata)
        for (name, tensor) in dict.entries { try slashed.insert(tensor, named: name.replacingOccurrences(of: ".", with: "/")) }
        let url = folder.file(name)
        try Checkpoints.write(slashed, to: url, format: .hdf5)
        return url
    }

    static func verify(_ reference: URL) throws -> VerifyReport {
        try LoadedCheckpoint(checkpoint).verify(against: LoadedCheckpoint(reference))
    }

    static func reason(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let PipelineError.invalidReference(_, reason) { return reason.description } catch {
            return "unexpected error: \(error)"
        }
    }

    @Test("the unchanged reference passes, so each case below fails for its own change")
    func baseline() throws {
        let folder = try TemporaryFolder()
        #expect(try Self.verify(try Self.reference(in: folder) { _ in }).passed)
    }

    @Test("hidden states past the model's depth are a mismatch of models, not ignored")
    func extraHiddenState() throws {
        let folder = try TemporaryFolder()
        let url = try Self.reference(in: folder) { dict in
            try dict.insert(dict["outputs.hidden_states.0"]!, named: "outputs.hidden_states.99")
        }
        let reason = Self.reason { _ = try Self.verify(url) }
        #expect(reason?.contains("/outputs/hidden_states/99") == true, "\(reason ?? "passed")")
        #expect(reason?.contains("hidden states 0…3") == true)
    }

    @Test("an output the model does not produce is listed as skipped, never passed over in silence")
    func unknownOutput() throws {
        let folder = try TemporaryFolder()
        let url = try Self.reference(in: folder) { dict in
            try dict.insert(try Tensor(float32: [1, 2, 3], shape: [3]), named: "outputs.logits")
        }
        let report = try Self.verify(url)
        #expect(report.skipped.contains("/outputs/logits (not an output this model produces)"), "\(report.skipped)")
        #expect(!report.outputs.contains { $0.name.contains("logits") })
    }

    @Test("float token ids, masks or type ids are refused, naming the dataset", arguments: ["input_ids", "attention_mask"])
    func floatInputs(name: String) throws {
        let folder = try TemporaryFolder()
        let url = try Self.reference(in: folder) { dict in
            let ids = dict["inputs.\(name)"]!
            dict.set(try Tensor(float32: ids.int64Values().map(Float.init), shape: ids.shape), named: "inputs.\(name)")
        }
        let reason = Self.reason { _ = try Self.verify(url) }
        #expect(reason?.contains("/inputs/\(name) has dtype float32; it must hold integers") == true, "\(reason ?? "passed")")
    }

    @Test("a tolerance attribute that is not a finite number of 0 or more is an error naming it",
          arguments: [("atol", "nan"), ("atol", "-1"), ("rtol", "abc"), ("atol", "inf"), ("rtol", "")])
    func badTolerance(attribute: String, value: String) throws {
        let folder = try TemporaryFolder()
        let url = try Self.reference(in: folder) { dict in dict.metadata[attribute] = value }
        let reason = Self.reason { _ = try Self.verify(url) }
        #expect(reason?.contains("the \(attribute) attribute is '\(value)'") == true, "\(reason ?? "passed")")
        // Explicit tolerances do not hide a damaged file either.
        let again = Self.reason { _ = try LoadedCheckpoint(Self.checkpoint).verify(against: LoadedCheckpoint(url), options: VerifyOptions(atol: 1, rtol: 1)) }
        #expect(again != nil)
    }

    @Test("token ids outside the vocabulary are blamed on the reference file, in verify, run and usage")
    func idsBeyondVocabulary() throws {
        let folder = try TemporaryFolder()
        let url = try Self.reference(in: folder) { dict in
            let ids = dict["inputs.input_ids"]!
            var values = ids.int64Values()
            values[4] = 100_000
            dict.set(try Tensor(int64: values, shape: ids.shape), named: "inputs.input_ids")
        }
        for run in [{ _ = try Self.verify(url) }, { _ = try LoadedCheckpoint(Self.checkpoint).run(.file(url)) },
                    { _ = try LoadedCheckpoint(Self.checkpoint).usage(.file(url)) }] as [() throws -> Void] {
            do {
                try run()
                Issue.record("accepted an id beyond the vocabulary")
            } catch let PipelineError.invalidReference(path, reason) {
                #expect(path.hasSuffix("reference.h5"))
                #expect(reason.description.contains("token id 100000 at [0, 4]"), "\(reason)")
            } catch {
                Issue.record("blamed elsewhere: \(error)")
            }
        }
    }
}
