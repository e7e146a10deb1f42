import Foundation

/// Where tests find the repository, the built CLI and scratch space.
public enum TestPaths {
    /// The repository root: the nearest folder above this file holding `Package.swift`.
    public static let repositoryRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        return url
    }()

    /// A path inside the repository.
    public static func repository(_ relativePath: String) -> URL { repositoryRoot.appendingPathComponent(relativePath) }

    /// The `pkm-convert` executable built next to the test bundle (or in `.build/debug`), if any.
    public static var cli: URL? {
        var candidates = [Bundle.main.bundleURL.appendingPathComponent("pkm-convert"),
                          Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("pkm-convert")]
        if let executable = Bundle.main.executableURL {
            candidates.append(executable.deletingLastPathComponent().appendingPathComponent("pkm-convert"))
        }
        candidates.append(repositoryRoot.appendingPathComponent(".build/debug/pkm-convert"))
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// Creates a fresh, empty, uniquely named folder under the system temporary directory.
    public static func newFolder(prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A temporary folder removed (with its contents) when the value goes away.
public final class TemporaryFolder: Sendable {
    public let url: URL

    public init(prefix: String = "pkm-tests") throws {
        url = try TestPaths.newFolder(prefix: prefix)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    /// A path inside the folder.
    public func file(_ name: String) -> URL { url.appendingPathComponent(name) }

    /// The names in the folder, sorted.
    public var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }
}
