import Foundation
import PKMFormats
import PKMTensor

/// A recoverable finding to show the user (printed by the CLI, never by the library).
public struct Diagnostic: Sendable, Codable, Equatable {
    public enum Severity: String, Sendable, Codable { case note, warning }
    public var severity: Severity
    public var message: String
    public init(_ severity: Severity, _ message: String) {
        self.severity = severity
        self.message = message
    }
}
