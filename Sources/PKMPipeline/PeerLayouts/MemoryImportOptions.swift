import Foundation

/// How a memory's tensors are found and canonicalised on import.
public struct MemoryImportOptions: Sendable, Codable, Equatable {
    /// Layout to assume, or `auto`.
    public var layout: MemoryLayoutChoice = .auto
    /// Module attribute holding the memory under `encoder.layer.{i}.` besides ``KeyMapping/memoryAttributes``.
    public var attribute: String?
    public init(layout: MemoryLayoutChoice = .auto, attribute: String? = nil) {
        self.layout = layout
        self.attribute = attribute
    }
}
