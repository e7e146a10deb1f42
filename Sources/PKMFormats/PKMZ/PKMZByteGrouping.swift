/// The pkmz byte-grouping transform (`schemas/pkmz.md` §6): within one frame of `n` elements of
/// `s` bytes, byte `p` of element `i` moves to position `p·n + i`.
///
/// Float weights look random in their low mantissa bytes but their sign/exponent bytes repeat a
/// lot; putting each byte plane in one run lets zstd find that redundancy (HDF5's shuffle filter
/// and Blosc do the same). Both directions run on raw pointers in blocks of 8 elements: each block
/// reads or writes one 64-bit word per plane. Source and destination must not overlap.
enum PKMZByteGrouping {
    /// Splits `byteCount` bytes of `elementSize`-byte elements into byte planes.
    static func group(_ source: UnsafeRawPointer, into destination: UnsafeMutableRawPointer,
                      byteCount: Int, elementSize: Int) {
        let count = byteCount / elementSize
        var done = 0
        #if _endian(little)
        switch elementSize {
        case 2: done = group2(source, destination, count)
        case 4: done = group4(source, destination, count)
        case 8: done = group8(source, destination, count)
        default: break
        }
        #endif
        for element in done..<count {
            for plane in 0..<elementSize {
                destination.storeBytes(of: source.load(fromByteOffset: element * elementSize + plane, as: UInt8.self),
                                       toByteOffset: plane * count + element, as: UInt8.self)
            }
        }
    }

    /// Reassembles elements from byte planes written by ``group(_:into:byteCount:elementSize:)``.
    static func ungroup(_ source: UnsafeRawPointer, into destination: UnsafeMutableRawPointer,
                        byteCount: Int, elementSize: Int) {
        let count = byteCount / elementSize
        var done = 0
        #if _endian(little)
        switch elementSize {
        case 2: done = ungroup2(source, destination, count)
        case 4: done = ungroup4(source, destination, count)
        case 8: done = ungroup8(source, destination, count)
        default: break
        }
        #endif
        for element in done..<count {
            for plane in 0..<elementSize {
                destination.storeBytes(of: source.load(fromByteOffset: plane * count + element, as: UInt8.self),
                                       toByteOffset: element * elementSize + plane, as: UInt8.self)
            }
        }
    }

    // MARK: - 8-element blocks (little-endian hosts)

    /// Byte `plane` of each of the 8 values, packed into one word (value k → byte k).
    @inline(__always)
    private static func gather(_ v0: UInt64, _ v1: UInt64, _ v2: UInt64, _ v3: UInt64,
                               _ v4: UInt64, _ v5: UInt64, _ v6: UInt64, _ v7: UInt64, shift: UInt64) -> UInt64 {
        ((v0 >> shift) & 0xFF) | ((v1 >> shift) & 0xFF) << 8 | ((v2 >> shift) & 0xFF) << 16 | ((v3 >> shift) & 0xFF) << 24
            | ((v4 >> shift) & 0xFF) << 32 | ((v5 >> shift) & 0xFF) << 40 | ((v6 >> shift) & 0xFF) << 48 | ((v7 >> shift) & 0xFF) << 56
    }

    @inline(__always)
    private static func load<T: FixedWidthInteger>(_ pointer: UnsafeRawPointer, _ offset: Int, _: T.Type) -> UInt64 {
        UInt64(truncatingIfNeeded: pointer.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    private static func group2(_ source: UnsafeRawPointer, _ destination: UnsafeMutableRawPointer, _ count: Int) -> Int {
        let blocks = count / 8
        for block in 0..<blocks {
            let at = source + block * 16
            let v0 = load(at, 0, UInt16.self), v1 = load(at, 2, UInt16.self), v2 = load(at, 4, UInt16.self), v3 = load(at, 6, UInt16.self)
            let v4 = load(at, 8, UInt16.self), v5 = load(at, 10, UInt16.self), v6 = load(at, 12, UInt16.self), v7 = load(at, 14, UInt16.self)
            destination.storeBytes(of: gather(v0, v1, v2, v3, v4, v5, v6, v7, shift: 0), toByteOffset: block * 8, as: UInt64.self)
            destination.storeBytes(of: gather(v0, v1, v2, v3, v4, v5, v6, v7, shift: 8), toByteOffset: count + block * 8, as: UInt64.self)
        }
        return blocks * 8
    }

    private static func group4(_ source: UnsafeRawPointer, _ destination: UnsafeMutableRawPointer, _ count: Int) -> Int {
        let blocks = count / 8
        for block in 0..<blocks {
            let at = source + block * 32
            let v0 = load(at, 0, UInt32.self), v1 = load(at, 4, UInt32.self), v2 = load(at, 8, UInt32.self), v3 = load(at, 12, UInt32.self)
            let v4 = load(at, 16, UInt32.self), v5 = load(at, 20, UInt32.self), v6 = load(at, 24, UInt32.self), v7 = load(at, 28, UInt32.self)
            let out = destination + block * 8
            out.storeBytes(of: gather(v0, v1, v2, v3, v4, v5, v6, v7, shift: 0), as: UInt64.self)
            out.storeBytes(of: gather(v0, v1, v2, v3, v4, v5, v6, v7, shift: 8), toByteOffset: count, as: UInt64.self)
            out.storeBytes(of: gather(v0, v1, v2, v3, v4, v5, v6, v7, shift: 16), toByteOffset: 2 * count, as: UInt64.self)
            out.storeBytes(of: gather(v0, v1, v2, v3, v4, v5, v6, v7, shift: 24), toByteOffset: 3 * count, as: UInt64.self)
        }
        return blocks * 8
    }

    private static func group8(_ source: UnsafeRawPointer, _ destination: UnsafeMutableRawPointer, _ count: Int) -> Int {
        let blocks = count / 8
        for block in 0..<blocks {
            let at = source + block * 64
            let v0 = load(at, 0, UInt64.self), v1 = load(at, 8, UInt64.self), v2 = load(at, 16, UInt64.self), v3 = load(at, 24, UInt64.self)
            let v4 = load(at, 32, UInt64.self), v5 = load(at, 40, UInt64.self), v6 = load(at, 48, UInt64.self), v7 = load(at, 56, UInt64.self)
            let out = destination + block * 8
            for plane in 0..<8 {
                out.storeBytes(of: gather(v0, v1, v2, v3, v4, v5, v6, v7, shift: UInt64(plane * 8)),
                               toByteOffset: plane * count, as: UInt64.self)
            }
        }
        return blocks * 8
    }

    /// Byte `k` of each plane word, as one element whose byte `p` comes from plane `p`.
    @inline(__always)
    private static func scatter(_ planes: (UInt64, UInt64, UInt64, UInt64), element: Int) -> UInt64 {
        let shift = UInt64(element * 8)
        return ((planes.0 >> shift) & 0xFF) | ((planes.1 >> shift) & 0xFF) << 8
            | ((planes.2 >> shift) & 0xFF) << 16 | ((planes.3 >> shift) & 0xFF) << 24
    }

    private static func ungroup2(_ source: UnsafeRawPointer, _ destination: UnsafeMutableRawPointer, _ count: Int) -> Int {
        let blocks = count / 8
        for block in 0..<blocks {
            let at = source + block * 8
            let low = load(at, 0, UInt64.self), high = load(at, count, UInt64.self)
            let out = destination + block * 16
            // Interleave: low bytes go to even positions, high bytes to odd ones.
            var first: UInt64 = 0, second: UInt64 = 0
            for element in 0..<4 {
                let shift = UInt64(element * 8)
                first |= ((low >> shift) & 0xFF) << (shift * 2) | ((high >> shift) & 0xFF) << (shift * 2 + 8)
                second |= ((low >> (shift + 32)) & 0xFF) << (shift * 2) | ((high >> (shift + 32)) & 0xFF) << (shift * 2 + 8)
            }
            out.storeBytes(of: first, as: UInt64.self)
            out.storeBytes(of: second, toByteOffset: 8, as: UInt64.self)
        }
        return blocks * 8
    }

    private static func ungroup4(_ source: UnsafeRawPointer, _ destination: UnsafeMutableRawPointer, _ count: Int) -> Int {
        let blocks = count / 8
        for block in 0..<blocks {
            let at = source + block * 8
            let planes = (load(at, 0, UInt64.self), load(at, count, UInt64.self),
                          load(at, 2 * count, UInt64.self), load(at, 3 * count, UInt64.self))
            let out = destination + block * 32
            for pair in 0..<4 {
                let word = scatter(planes, element: 2 * pair) | scatter(planes, element: 2 * pair + 1) << 32
                out.storeBytes(of: word, toByteOffset: pair * 8, as: UInt64.self)
            }
        }
        return blocks * 8
    }

    private static func ungroup8(_ source: UnsafeRawPointer, _ destination: UnsafeMutableRawPointer, _ count: Int) -> Int {
        let blocks = count / 8
        for block in 0..<blocks {
            let at = source + block * 8
            let p0 = load(at, 0, UInt64.self), p1 = load(at, count, UInt64.self)
            let p2 = load(at, 2 * count, UInt64.self), p3 = load(at, 3 * count, UInt64.self)
            let p4 = load(at, 4 * count, UInt64.self), p5 = load(at, 5 * count, UInt64.self)
            let p6 = load(at, 6 * count, UInt64.self), p7 = load(at, 7 * count, UInt64.self)
            let out = destination + block * 64
            for element in 0..<8 {
                out.storeBytes(of: gather(p0, p1, p2, p3, p4, p5, p6, p7, shift: UInt64(element * 8)),
                               toByteOffset: element * 8, as: UInt64.self)
            }
        }
        return blocks * 8
    }
}
