import Foundation

/// Renders a ``UsageReport`` as a self-contained SVG figure (no scripts, no external fonts or files).
///
/// One row per memory layer: on the left the sorted slot-weight curve — x is the share of all N²
/// slots, heaviest first, on a log scale from one slot to all of them; y is the share of the total
/// weight they carry — with the uniform-use diagonal for reference, and the 50/90/99 % points
/// marked; on the right the share of slots each head picked at least once.
public enum UsagePlot {
    /// The SVG document.
    public static func svg(_ report: UsageReport) -> String {
        let rowHeight = 260.0, width = 900.0, top = 56.0
        let height = top + rowHeight * Double(max(report.layers.count, 1)) + 24
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(Int(width / 2))" y="24" text-anchor="middle" font-size="15" font-weight="bold">Memory usage: \(escape(shortName(report.checkpoint)))</text>
        <text x="\(Int(width / 2))" y="42" text-anchor="middle" fill="#555">over \(escape(shortName(report.inputs))) — \(report.layers.first?.tokens ?? 0) tokens</text>

        """
        for (row, layer) in report.layers.enumerated() {
            let y0 = top + rowHeight * Double(row)
            svg += curvePanel(layer, x: 70, y: y0 + 20, width: 470, height: rowHeight - 70)
            svg += headPanel(layer, x: 610, y: y0 + 20, width: 260, height: rowHeight - 70)
        }
        svg += "</svg>\n"
        return svg
    }

    static func curvePanel(_ layer: LayerUsage, x: Double, y: Double, width: Double, height: Double) -> String {
        let slots = Double(max(layer.slots, 1))
        let decades = max(1.0, log10(slots))
        func px(_ share: Double) -> Double { x + width * (log10(max(share * slots, 1)) / decades) }
        func py(_ weightShare: Double) -> Double { y + height * (1 - weightShare) }
        var out = "<g>\n"
        out += "<text x=\(q(x)) y=\(q(y - 6)) font-weight=\"bold\">layer \(layer.layer) (\(layer.mode.rawValue)): \(format(layer.usagePercent)) % of \(layer.slots.formatted()) slots used, KL(weights) \(String(format: "%.3f", layer.klWeights))</text>\n"
        out += "<rect x=\(q(x)) y=\(q(y)) width=\(q(width)) height=\(q(height)) fill=\"none\" stroke=\"#999\"/>\n"
        // Axes: decades of slots, quarters of weight.
        for decade in 0...Int(decades.rounded(.down)) {
            let share = pow(10, Double(decade)) / slots
            let gx = px(share)
            out += "<line x1=\(q(gx)) y1=\(q(y)) x2=\(q(gx)) y2=\(q(y + height)) stroke=\"#eee\"/>\n"
            out += "<text x=\(q(gx)) y=\(q(y + height + 14)) text-anchor=\"middle\" fill=\"#555\">\(decade == 0 ? "1" : "10^\(decade)")</text>\n"
        }
        for quarter in 0...4 {
            let share = Double(quarter) / 4, gy = py(share)
            out += "<line x1=\(q(x)) y1=\(q(gy)) x2=\(q(x + width)) y2=\(q(gy)) stroke=\"#eee\"/>\n"
            out += "<text x=\(q(x - 6)) y=\(q(gy + 4)) text-anchor=\"end\" fill=\"#555\">\(quarter * 25) %</text>\n"
        }
        out += "<text x=\(q(x + width / 2)) y=\(q(y + height + 30)) text-anchor=\"middle\">slots, heaviest first (log scale)</text>\n"
        out += "<text transform=\"translate(\(r(x - 46)) \(r(y + height / 2))) rotate(-90)\" text-anchor=\"middle\">share of the total weight</text>\n"
        // Uniform use, for reference.
        var uniform: [String] = []
        for step in 0...60 {
            let share = pow(slots, Double(step) / 60) / slots
            uniform.append("\(r(px(share))),\(r(py(share)))")
        }
        out += "<polyline points=\"\(uniform.joined(separator: " "))\" fill=\"none\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>\n"
        out += "<text x=\(q(x + width - 14)) y=\(q(py(0.12))) text-anchor=\"end\" fill=\"#999\">uniform use</text>\n"
        if !layer.weightCurve.isEmpty {
            let points = layer.weightCurve.map { "\(r(px($0.slotShare))),\(r(py($0.weightShare)))" }
            out += "<polyline points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n"
        }
        for (share, count) in [(0.5, layer.slotsFor50Percent), (0.9, layer.slotsFor90Percent), (0.99, layer.slotsFor99Percent)] where count > 0 {
            let mx = px(Double(count) / slots), my = py(share)
            out += "<circle cx=\(q(mx)) cy=\(q(my)) r=\"3.5\" fill=\"#d62728\"/>\n"
            // The 90 and 99 % labels sit below-left of their markers (the 99 % marker is higher), so they never overlap.
            let dy = 16.0
            let anchor = share >= 0.9 ? "end" : "start"
            out += "<text x=\(q(mx + (share >= 0.9 ? -8 : 6))) y=\(q(my + dy)) text-anchor=\"\(anchor)\" fill=\"#d62728\">\(Int(share * 100)) %: \(count.formatted()) slots</text>\n"
        }
        return out + "</g>\n"
    }

    static func headPanel(_ layer: LayerUsage, x: Double, y: Double, width: Double, height: Double) -> String {
        let heads = layer.headUsagePercent
        let maximum = max(heads.max() ?? 0, layer.usagePercent, 1e-9)
        var out = "<g>\n<text x=\(q(x)) y=\(q(y - 6)) font-weight=\"bold\">slots used per head</text>\n"
        out += "<rect x=\(q(x)) y=\(q(y)) width=\(q(width)) height=\(q(height)) fill=\"none\" stroke=\"#999\"/>\n"
        let bar = width / Double(max(heads.count + 1, 1))
        for (index, value) in (heads + [layer.usagePercent]).enumerated() {
            let h = height * value / maximum * 0.9
            let bx = x + bar * Double(index) + bar * 0.15
            let color = index == heads.count ? "#ff7f0e" : "#2ca02c"
            out += "<rect x=\(q(bx)) y=\(q(y + height - h)) width=\(q(bar * 0.7)) height=\(q(h)) fill=\"\(color)\"/>\n"
            out += "<text x=\(q(bx + bar * 0.35)) y=\(q(y + height - h - 4)) text-anchor=\"middle\">\(format(value)) %</text>\n"
            out += "<text x=\(q(bx + bar * 0.35)) y=\(q(y + height + 14)) text-anchor=\"middle\" fill=\"#555\">\(index == heads.count ? "all" : "head \(index)")</text>\n"
        }
        return out + "</g>\n"
    }

    static func q(_ value: Double) -> String { "\"\(r(value))\"" }
    static func r(_ value: Double) -> String { String(format: "%.1f", value) }
    static func format(_ percent: Double) -> String { percent >= 10 ? String(format: "%.1f", percent) : String(format: "%.2f", percent) }
    static func shortName(_ path: String) -> String { (path as NSString).lastPathComponent }
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
