import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMPipeline
import PKMTokenizers

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show how a checkpoint's tokenizer splits text: tokens, ids and token type ids.",
        discussion: "The tokenizer is --tokenizer PATH, else the one carried in the checkpoint, else the tokenizer files beside it.")

    @Argument(help: "Checkpoint (any format or a model folder), or a folder holding only tokenizer files.")
    var checkpoint: String

    @Option(name: .long, help: "The text to tokenize.")
    var text: String

    @Option(name: .long, help: "A second text, encoded as a pair ([CLS] A [SEP] B [SEP] for BERT).")
    var pair: String?

    @Option(name: .long, help: "tokenizer.json, or a folder with tokenizer.json / vocab.txt / vocab.json + merges.txt.")
    var tokenizer: String?

    @Option(name: .long, help: "Truncate to this many tokens (special tokens included).")
    var maxLength: Int?

    @Flag(name: .long, inversion: .prefixedNo, help: "Add the special tokens of the post-processor ([CLS] … [SEP], <s> … </s>).")
    var specialTokens = true

    @OptionGroup var global: GlobalOptions

    struct Output: Encodable {
        var tokenizer: String
        var tokens: [String]
        var ids: [Int]
        var typeIds: [Int]
    }

    func run() throws {
        try Console.run(json: global.json) {
            let loaded = try TextInputs.tokenizer(at: URL(fileURLWithPath: checkpoint), options: global.open(tokenizer: tokenizer))
            let encoding = try loaded.0.encode(text, pair: pair, addSpecialTokens: specialTokens, maxLength: maxLength)
            let output = Output(tokenizer: loaded.1, tokens: encoding.tokens, ids: encoding.ids, typeIds: encoding.typeIds)
            if global.json { Console.printJSON(output); return }
            print("tokenizer: \(output.tokenizer); \(output.ids.count) \(output.ids.count == 1 ? "token" : "tokens")")
            let width = output.tokens.map(\.count).max() ?? 0
            for (index, token) in output.tokens.enumerated() {
                let padded = token.padding(toLength: max(width, 1), withPad: " ", startingAt: 0)
                print("  \(padded)  \(output.ids[index])" + (pair != nil ? "  type \(output.typeIds[index])" : ""))
            }
        }
    }
}
