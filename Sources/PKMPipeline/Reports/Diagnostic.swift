import Foundation

/// A recoverable finding to show the user (printed by the CLI, never by the library).
public struct Diagnostic: Sendable, Codable, Equatable {
    public enum Severity: String, Sendable, Codable { case note, warning }

    /// What a per-item diagnostic is about, so a front end can summarise a long list (nil for one-off findings).
    public enum Topic: String, Sendable, Codable {
        /// One tensor a graft created (``GraftResult/created`` lists them).
        case createdTensor = "created-tensor"
        /// One tensor a graft dropped (``GraftResult/dropped`` lists them).
        case droppedTensor = "dropped-tensor"
    }

    public var severity: Severity
    public var message: String
    public var topic: Topic?

    public init(_ severity: Severity, _ message: String, topic: Topic? = nil) {
        self.severity = severity
        self.message = message
        self.topic = topic
    }
}
