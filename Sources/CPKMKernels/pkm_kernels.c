// See include/pkm_kernels.h. Plain C99 plus SSE2 (x86-64 baseline) where it pays; no other flags.
#include "pkm_kernels.h"
#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#pragma clang fp contract(off)

// MARK: - Byte planes

static inline uint16_t rotl16(uint16_t v) { return (uint16_t)((v << 1) | (v >> 15)); }
static inline uint16_t rotr16(uint16_t v) { return (uint16_t)((v >> 1) | (v << 15)); }
static inline uint32_t rotl32(uint32_t v) { return (v << 1) | (v >> 31); }
static inline uint32_t rotr32(uint32_t v) { return (v >> 1) | (v << 31); }
static inline uint64_t rotl64(uint64_t v) { return (v << 1) | (v >> 63); }
static inline uint64_t rotr64(uint64_t v) { return (v >> 1) | (v << 63); }

void pkm_planes_split(const void *source, void *destination, size_t count, int element_size, int rotate) {
    const uint8_t *in = (const uint8_t *)source;
    uint8_t *out = (uint8_t *)destination;
    size_t i = 0;
    if (element_size == 4) {
#if defined(__SSE2__)
        for (; i + 16 <= count; i += 16) {
            __m128i r0 = _mm_loadu_si128((const __m128i *)(in + 4 * i));
            __m128i r1 = _mm_loadu_si128((const __m128i *)(in + 4 * i + 16));
            __m128i r2 = _mm_loadu_si128((const __m128i *)(in + 4 * i + 32));
            __m128i r3 = _mm_loadu_si128((const __m128i *)(in + 4 * i + 48));
            if (rotate) {
                r0 = _mm_or_si128(_mm_slli_epi32(r0, 1), _mm_srli_epi32(r0, 31));
                r1 = _mm_or_si128(_mm_slli_epi32(r1, 1), _mm_srli_epi32(r1, 31));
                r2 = _mm_or_si128(_mm_slli_epi32(r2, 1), _mm_srli_epi32(r2, 31));
                r3 = _mm_or_si128(_mm_slli_epi32(r3, 1), _mm_srli_epi32(r3, 31));
            }
            __m128i s0 = _mm_unpacklo_epi8(r0, r1), s1 = _mm_unpackhi_epi8(r0, r1);
            __m128i s2 = _mm_unpacklo_epi8(r2, r3), s3 = _mm_unpackhi_epi8(r2, r3);
            __m128i u0 = _mm_unpacklo_epi8(s0, s1), u1 = _mm_unpackhi_epi8(s0, s1);
            __m128i u2 = _mm_unpacklo_epi8(s2, s3), u3 = _mm_unpackhi_epi8(s2, s3);
            __m128i v0 = _mm_unpacklo_epi8(u0, u1), v1 = _mm_unpackhi_epi8(u0, u1);
            __m128i v2 = _mm_unpacklo_epi8(u2, u3), v3 = _mm_unpackhi_epi8(u2, u3);
            _mm_storeu_si128((__m128i *)(out + i), _mm_unpacklo_epi64(v0, v2));
            _mm_storeu_si128((__m128i *)(out + count + i), _mm_unpackhi_epi64(v0, v2));
            _mm_storeu_si128((__m128i *)(out + 2 * count + i), _mm_unpacklo_epi64(v1, v3));
            _mm_storeu_si128((__m128i *)(out + 3 * count + i), _mm_unpackhi_epi64(v1, v3));
        }
#endif
        for (; i < count; i++) {
            uint32_t v; memcpy(&v, in + 4 * i, 4);
            if (rotate) v = rotl32(v);
            for (int p = 0; p < 4; p++) out[p * count + i] = (uint8_t)(v >> (8 * p));
        }
    } else if (element_size == 2) {
#if defined(__SSE2__)
        const __m128i low = _mm_set1_epi16(0xFF);
        for (; i + 16 <= count; i += 16) {
            __m128i r0 = _mm_loadu_si128((const __m128i *)(in + 2 * i));
            __m128i r1 = _mm_loadu_si128((const __m128i *)(in + 2 * i + 16));
            if (rotate) {
                r0 = _mm_or_si128(_mm_slli_epi16(r0, 1), _mm_srli_epi16(r0, 15));
                r1 = _mm_or_si128(_mm_slli_epi16(r1, 1), _mm_srli_epi16(r1, 15));
            }
            _mm_storeu_si128((__m128i *)(out + i), _mm_packus_epi16(_mm_and_si128(r0, low), _mm_and_si128(r1, low)));
            _mm_storeu_si128((__m128i *)(out + count + i), _mm_packus_epi16(_mm_srli_epi16(r0, 8), _mm_srli_epi16(r1, 8)));
        }
#endif
        for (; i < count; i++) {
            uint16_t v; memcpy(&v, in + 2 * i, 2);
            if (rotate) v = rotl16(v);
            out[i] = (uint8_t)v;
            out[count + i] = (uint8_t)(v >> 8);
        }
    } else if (element_size == 8) {
        for (; i < count; i++) {
            uint64_t v; memcpy(&v, in + 8 * i, 8);
            if (rotate) v = rotl64(v);
            for (int p = 0; p < 8; p++) out[p * count + i] = (uint8_t)(v >> (8 * p));
        }
    } else {
        for (; i < count; i++)
            for (int p = 0; p < element_size; p++) out[p * count + i] = in[i * element_size + p];
    }
}

void pkm_planes_join(const uint8_t *const *planes, void *destination, size_t count, int element_size, int rotate) {
    uint8_t *out = (uint8_t *)destination;
    size_t i = 0;
    if (element_size == 4) {
        const uint8_t *p0 = planes[0], *p1 = planes[1], *p2 = planes[2], *p3 = planes[3];
#if defined(__SSE2__)
        for (; i + 16 <= count; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p0 + i)), b = _mm_loadu_si128((const __m128i *)(p1 + i));
            __m128i c = _mm_loadu_si128((const __m128i *)(p2 + i)), d = _mm_loadu_si128((const __m128i *)(p3 + i));
            __m128i x0 = _mm_unpacklo_epi8(a, b), x1 = _mm_unpackhi_epi8(a, b);
            __m128i y0 = _mm_unpacklo_epi8(c, d), y1 = _mm_unpackhi_epi8(c, d);
            __m128i r0 = _mm_unpacklo_epi16(x0, y0), r1 = _mm_unpackhi_epi16(x0, y0);
            __m128i r2 = _mm_unpacklo_epi16(x1, y1), r3 = _mm_unpackhi_epi16(x1, y1);
            if (rotate) {
                r0 = _mm_or_si128(_mm_srli_epi32(r0, 1), _mm_slli_epi32(r0, 31));
                r1 = _mm_or_si128(_mm_srli_epi32(r1, 1), _mm_slli_epi32(r1, 31));
                r2 = _mm_or_si128(_mm_srli_epi32(r2, 1), _mm_slli_epi32(r2, 31));
                r3 = _mm_or_si128(_mm_srli_epi32(r3, 1), _mm_slli_epi32(r3, 31));
            }
            _mm_storeu_si128((__m128i *)(out + 4 * i), r0);
            _mm_storeu_si128((__m128i *)(out + 4 * i + 16), r1);
            _mm_storeu_si128((__m128i *)(out + 4 * i + 32), r2);
            _mm_storeu_si128((__m128i *)(out + 4 * i + 48), r3);
        }
#endif
        for (; i < count; i++) {
            uint32_t v = (uint32_t)p0[i] | (uint32_t)p1[i] << 8 | (uint32_t)p2[i] << 16 | (uint32_t)p3[i] << 24;
            if (rotate) v = rotr32(v);
            memcpy(out + 4 * i, &v, 4);
        }
    } else if (element_size == 2) {
        const uint8_t *p0 = planes[0], *p1 = planes[1];
#if defined(__SSE2__)
        for (; i + 16 <= count; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p0 + i)), b = _mm_loadu_si128((const __m128i *)(p1 + i));
            __m128i r0 = _mm_unpacklo_epi8(a, b), r1 = _mm_unpackhi_epi8(a, b);
            if (rotate) {
                r0 = _mm_or_si128(_mm_srli_epi16(r0, 1), _mm_slli_epi16(r0, 15));
                r1 = _mm_or_si128(_mm_srli_epi16(r1, 1), _mm_slli_epi16(r1, 15));
            }
            _mm_storeu_si128((__m128i *)(out + 2 * i), r0);
            _mm_storeu_si128((__m128i *)(out + 2 * i + 16), r1);
        }
#endif
        for (; i < count; i++) {
            uint16_t v = (uint16_t)(p0[i] | p1[i] << 8);
            if (rotate) v = rotr16(v);
            memcpy(out + 2 * i, &v, 2);
        }
    } else if (element_size == 8) {
        for (; i < count; i++) {
            uint64_t v = 0;
            for (int p = 0; p < 8; p++) v |= (uint64_t)planes[p][i] << (8 * p);
            if (rotate) v = rotr64(v);
            memcpy(out + 8 * i, &v, 8);
        }
    } else {
        for (; i < count; i++)
            for (int p = 0; p < element_size; p++) out[i * element_size + p] = planes[p][i];
    }
}

// MARK: - Static order-0 rANS (32-bit states in [2^16, 2^32), 16-bit renormalisation, 8 interleaved lanes)

#define RANS_SCALE_BITS 12
#define RANS_TOTAL (1u << RANS_SCALE_BITS)
#define RANS_LOW (1u << 16)
#define RANS_LANES 8

size_t pkm_rans_bound(size_t count) { return 2 * count + 4 * RANS_LANES + 1 + 32 + 2 * 256 + 16; }

/// Scales counts to frequencies summing to RANS_TOTAL, each present symbol at least 1.
static void normalise(const uint32_t counts[256], size_t total, uint32_t freq[256]) {
    uint32_t sum = 0, largest = 0;
    for (int s = 0; s < 256; s++) {
        freq[s] = counts[s] ? (uint32_t)(((uint64_t)counts[s] * RANS_TOTAL) / total) : 0;
        if (counts[s] && freq[s] == 0) freq[s] = 1;
        sum += freq[s];
        if (counts[s] > counts[largest]) largest = (uint32_t)s;
    }
    if (sum < RANS_TOTAL) freq[largest] += RANS_TOTAL - sum;
    while (sum > RANS_TOTAL) {
        int big = 0;
        for (int s = 1; s < 256; s++) if (freq[s] > freq[big]) big = s;
        uint32_t excess = sum - RANS_TOTAL, room = freq[big] - 1, take = excess < room ? excess : room;
        if (take == 0) break;
        freq[big] -= take;
        sum -= take;
    }
}

size_t pkm_rans_encode(const uint8_t *source, size_t count, uint8_t *destination, size_t capacity, uint8_t *scratch) {
    if (count == 0 || capacity < 2) return 0;
    uint32_t counts[256] = {0};
    for (size_t i = 0; i < count; i++) counts[source[i]]++;
    int distinct = 0, only = 0;
    for (int s = 0; s < 256; s++) if (counts[s]) { distinct++; only = s; }
    if (distinct == 1) {
        destination[0] = 1;
        destination[1] = (uint8_t)only;
        return 2;
    }
    uint32_t freq[256], cum[256];
    normalise(counts, count, freq);
    uint32_t running = 0;
    for (int s = 0; s < 256; s++) { cum[s] = running; running += freq[s]; }
    // The coded size is within a few bytes of sum(count * log2(total / freq)); skip the encoding
    // when even that estimate does not fit (noise planes cost a histogram, not an encode).
    double bits = 0;
    for (int s = 0; s < 256; s++) if (counts[s]) bits += (double)counts[s] * (RANS_SCALE_BITS - log2((double)freq[s]));
    if (bits / 8 + 33 + distinct > (double)capacity) return 0;

    // Table: mode 0, presence bitmap, frequencies - 1 (one byte below 128, else two).
    uint8_t header[1 + 32 + 512];
    size_t h = 0;
    header[h++] = 0;
    memset(header + 1, 0, 32);
    for (int s = 0; s < 256; s++) if (freq[s]) header[1 + (s >> 3)] |= (uint8_t)(1u << (s & 7));
    h = 33;
    for (int s = 0; s < 256; s++) {
        if (!freq[s]) continue;
        uint32_t v = freq[s] - 1;
        if (v < 128) header[h++] = (uint8_t)v;
        else { header[h++] = (uint8_t)(0x80 | (v >> 8)); header[h++] = (uint8_t)(v & 0xFF); }
    }

    uint8_t *end = scratch + pkm_rans_bound(count), *ptr = end;
    uint32_t state[RANS_LANES];
    for (int l = 0; l < RANS_LANES; l++) state[l] = RANS_LOW;
    for (size_t i = count; i-- > 0;) {
        uint32_t s = source[i], f = freq[s];
        uint32_t x = state[i & (RANS_LANES - 1)];
        uint32_t limit = ((RANS_LOW >> RANS_SCALE_BITS) << 16) * f;
        if (x >= limit) { ptr -= 2; ptr[0] = (uint8_t)x; ptr[1] = (uint8_t)(x >> 8); x >>= 16; }
        state[i & (RANS_LANES - 1)] = ((x / f) << RANS_SCALE_BITS) + (x % f) + cum[s];
    }
    for (int l = RANS_LANES - 1; l >= 0; l--) {
        ptr -= 4;
        ptr[0] = (uint8_t)state[l]; ptr[1] = (uint8_t)(state[l] >> 8);
        ptr[2] = (uint8_t)(state[l] >> 16); ptr[3] = (uint8_t)(state[l] >> 24);
    }
    size_t body = (size_t)(end - ptr), total = h + body;
    if (total > capacity) return 0;
    memcpy(destination, header, h);
    memcpy(destination + h, ptr, body);
    return total;
}

int pkm_rans_decode(const uint8_t *source, size_t length, uint8_t *destination, size_t count) {
    if (length < 1) return -1;
    if (source[0] == 1) {
        if (length != 2) return -4;
        memset(destination, source[1], count);
        return 0;
    }
    if (source[0] != 0 || length < 33) return -1;
    uint32_t table[RANS_TOTAL];
    size_t p = 33;
    uint32_t running = 0;
    for (int s = 0; s < 256; s++) {
        if (!(source[1 + (s >> 3)] & (1u << (s & 7)))) continue;
        if (p >= length) return -1;
        uint32_t v = source[p++];
        if (v & 0x80) {
            if (p >= length) return -1;
            v = ((v & 0x7F) << 8) | source[p++];
        }
        uint32_t f = v + 1;
        if (f > RANS_TOTAL || running + f > RANS_TOTAL) return -2;
        for (uint32_t k = 0; k < f; k++) table[running + k] = (uint32_t)s | (v << 8) | (k << 20);
        running += f;
    }
    if (running != RANS_TOTAL) return -2;
    if (length - p < 4 * RANS_LANES) return -3;
    uint32_t state[RANS_LANES];
    for (int l = 0; l < RANS_LANES; l++, p += 4)
        state[l] = (uint32_t)source[p] | (uint32_t)source[p + 1] << 8 | (uint32_t)source[p + 2] << 16 | (uint32_t)source[p + 3] << 24;
    const uint8_t *in = source + p, *end = source + length;
    // Branch-free renormalisation: a lane that needs a word takes it with a select; reading past
    // the end takes zeros from `pad` instead and sets `overrun`, so the loop never leaves the
    // buffers and a malformed stream is reported after it.
    static const uint8_t pad[2] = {0, 0};
    uint32_t overrun = 0;
#define RANS_STEP(lane, out)                                                              \
    do {                                                                                  \
        uint32_t x = state[lane], e = table[x & (RANS_TOTAL - 1)];                        \
        (out) = (uint8_t)e;                                                               \
        x = (((e >> 8) & 0xFFF) + 1) * (x >> RANS_SCALE_BITS) + (e >> 20);                \
        uint32_t need = x < RANS_LOW, room = (end - in) >= 2;                             \
        const uint8_t *word = room ? in : pad;                                            \
        uint32_t next = (x << 16) | (uint32_t)word[0] | (uint32_t)word[1] << 8;           \
        overrun |= need & !room;                                                          \
        state[lane] = need ? next : x;                                                    \
        in += 2 * (need & room);                                                          \
    } while (0)
    size_t i = 0;
    for (; i + RANS_LANES <= count; i += RANS_LANES) {
        RANS_STEP(0, destination[i]);
        RANS_STEP(1, destination[i + 1]);
        RANS_STEP(2, destination[i + 2]);
        RANS_STEP(3, destination[i + 3]);
        RANS_STEP(4, destination[i + 4]);
        RANS_STEP(5, destination[i + 5]);
        RANS_STEP(6, destination[i + 6]);
        RANS_STEP(7, destination[i + 7]);
    }
    for (; i < count; i++) RANS_STEP(i & (RANS_LANES - 1), destination[i]);
#undef RANS_STEP
    if (overrun) return -3;
    if (in != end) return -4;
    for (int l = 0; l < RANS_LANES; l++) if (state[l] != RANS_LOW) return -4;
    return 0;
}

// MARK: - Graft generator
// Written as short loops over blocks of PKM_GEN_BLOCK pairs so that the loop vectoriser turns
// each stage (SplitMix64, log, sine/cosine) into SIMD code. Every operation is a correctly
// rounded IEEE float32 operation (+, −, ×, ÷, sqrt, floor, exact integer conversions) and
// contraction into FMA is off, so the SSE2 build, the AVX2 build (picked at run time) and any
// other CPU give the same bytes.

uint64_t pkm_splitmix(uint64_t key, uint64_t index) {
    uint64_t z = key + (index + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline __attribute__((always_inline)) uint32_t float_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
static inline __attribute__((always_inline)) float bits_float(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }

/// Natural log for x in (0, 1] (musl's logf reduction and polynomial, float32 throughout).
static inline __attribute__((always_inline)) float fixed_log(float x) {
    uint32_t ix = float_bits(x);
    // Reduce x into [sqrt(2)/2, sqrt(2)): ix += 0x3f800000 - 0x3f3504f3 shifts the boundary.
    ix += 0x3f800000 - 0x3f3504f3;
    int k = (int)(ix >> 23) - 0x7f;
    ix = (ix & 0x007fffff) + 0x3f3504f3;
    float f = bits_float(ix) - 1.0f;
    float s = f / (2.0f + f), z = s * s, w = z * z;
    float t1 = w * (0.40000972152f + w * 0.24279078841f);
    float t2 = z * (0.66666662693f + w * 0.28498786688f);
    float r = t2 + t1, hfsq = 0.5f * f * f;
    float dk = (float)k;
    return s * (hfsq + r) + dk * 9.0580006145e-06f - hfsq + f + dk * 6.9313812256e-01f;
}

#define PKM_GEN_BLOCK 256

// sqrt without errno (its argument is never negative here), so that the loop vectorises.
#if defined(__clang__) && __has_builtin(__builtin_elementwise_sqrt)
#define PKM_SQRT(x) __builtin_elementwise_sqrt(x)
#else
#define PKM_SQRT(x) __builtin_sqrtf(x)
#endif

/// Box–Muller pairs `pair0 ..< pair0 + n` (n ≤ PKM_GEN_BLOCK), interleaved into out[0 ..< 2n].
static inline __attribute__((always_inline)) void normal_block(uint64_t key, uint64_t pair0, float std, float *out, size_t n) {
    const float half_pi = 1.57079632679489661923f;
    float u1[PKM_GEN_BLOCK], u2[PKM_GEN_BLOCK], radius[PKM_GEN_BLOCK];
    for (size_t j = 0; j < n; j++) {
        uint64_t word = pkm_splitmix(key, pair0 + j);
        u1[j] = (float)(int32_t)((uint32_t)(word >> 40) + 1) * 0x1p-24f;          // (0, 1]
        u2[j] = (float)(int32_t)((uint32_t)(word >> 8) & 0xFFFFFF) * 0x1p-24f;    // [0, 1)
    }
    for (size_t j = 0; j < n; j++) radius[j] = PKM_SQRT(-2.0f * fixed_log(u1[j]));
    for (size_t j = 0; j < n; j++) {
        float t = 4.0f * u2[j];
        float q = __builtin_floorf(t + 0.5f);                               // 0 … 4
        float y = (t - q) * half_pi;                                        // [-pi/4, pi/4]
        float y2 = y * y;
        float sine = y + y * y2 * (-1.6666667163e-01f + y2 * (8.3333337680e-03f + y2 * -1.9841270114e-04f));
        float cosine = 1.0f + y2 * (-0.5f + y2 * (4.1666667908e-02f + y2 * (-1.3888889225e-03f + y2 * 2.4801587642e-05f)));
        int quadrant = (int)q & 3;
        // Quadrant 0: (cos, sin); 1: (−sin, cos); 2: (−cos, −sin); 3: (sin, −cos).
        float c = (quadrant & 1) ? sine : cosine;
        float s = (quadrant & 1) ? cosine : sine;
        c = (quadrant == 1 || quadrant == 2) ? -c : c;
        s = (quadrant >= 2) ? -s : s;
        out[2 * j] = radius[j] * c * std;
        out[2 * j + 1] = radius[j] * s * std;
    }
}

/// Uniform values `start ..< start + n` (n ≤ PKM_GEN_BLOCK).
static inline __attribute__((always_inline)) void uniform_block(uint64_t key, uint64_t start, float bound, float *out, size_t n) {
    for (size_t j = 0; j < n; j++) {
        float unit = (float)(int32_t)(uint32_t)(pkm_splitmix(key, start + j) >> 40) * 0x1p-24f;
        out[j] = (unit * 2.0f - 1.0f) * bound;
    }
}

static inline __attribute__((always_inline)) void normal_fill_body(uint64_t key, uint64_t start, float std, float *destination, size_t count) {
    float edge[2];
    size_t i = 0;
    if (count && (start & 1)) {
        normal_block(key, start / 2, std, edge, 1);
        destination[i++] = edge[1];
    }
    uint64_t pair = (start + i) / 2;
    while (count - i >= 2) {
        size_t pairs = (count - i) / 2;
        if (pairs > PKM_GEN_BLOCK) pairs = PKM_GEN_BLOCK;
        normal_block(key, pair, std, destination + i, pairs);
        i += 2 * pairs;
        pair += pairs;
    }
    if (i < count) {
        normal_block(key, pair, std, edge, 1);
        destination[i] = edge[0];
    }
}

static inline __attribute__((always_inline)) void uniform_fill_body(uint64_t key, uint64_t start, float bound, float *destination, size_t count) {
    for (size_t i = 0; i < count; i += PKM_GEN_BLOCK) {
        size_t n = count - i < PKM_GEN_BLOCK ? count - i : PKM_GEN_BLOCK;
        uniform_block(key, start + i, bound, destination + i, n);
    }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define PKM_GEN_DISPATCH 1
__attribute__((target("avx2"))) static void normal_fill_avx2(uint64_t key, uint64_t start, float std, float *destination, size_t count) {
    normal_fill_body(key, start, std, destination, count);
}
__attribute__((target("avx2"))) static void uniform_fill_avx2(uint64_t key, uint64_t start, float bound, float *destination, size_t count) {
    uniform_fill_body(key, start, bound, destination, count);
}
static int has_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    return cached;
}
#endif

void pkm_normal_fill(uint64_t key, uint64_t start, float std, float *destination, size_t count) {
#ifdef PKM_GEN_DISPATCH
    if (has_avx2()) { normal_fill_avx2(key, start, std, destination, count); return; }
#endif
    normal_fill_body(key, start, std, destination, count);
}

void pkm_uniform_fill(uint64_t key, uint64_t start, float bound, float *destination, size_t count) {
#ifdef PKM_GEN_DISPATCH
    if (has_avx2()) { uniform_fill_avx2(key, start, bound, destination, count); return; }
#endif
    uniform_fill_body(key, start, bound, destination, count);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx512f,fma")))
static inline __m512 pkm_exp16(__m512 input) {
    const __m512 low = _mm512_set1_ps(-87.3f), high = _mm512_set1_ps(88.3762626647949f);
    __m512 x = _mm512_min_ps(_mm512_max_ps(input, low), high);
    const __m512 shifter = _mm512_set1_ps(12582912.0f);
    __m512 shifted = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shifter);
    __m512 n = _mm512_sub_ps(shifted, shifter);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 z = _mm512_mul_ps(x, x);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_add_ps(_mm512_fmadd_ps(y, z, x), _mm512_set1_ps(1.0f));
    __m512i exponent = _mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(shifted),
        _mm512_set1_epi32(0x4B400000)), _mm512_set1_epi32(127)), 23);
    __m512 result = _mm512_mul_ps(y, _mm512_castsi512_ps(exponent));
    __mmask16 under = _mm512_cmp_ps_mask(input, low, _CMP_LT_OQ);
    return _mm512_mask_mov_ps(result, under, _mm512_setzero_ps());
}

__attribute__((target("avx512f,fma")))
static inline __m512 pkm_gelu16(__m512 v) {
    __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752440f));
    __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(0x7FFFFFFF)));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    __m512 e = pkm_exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
    __m512 erf = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
    __mmask16 negative = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    erf = _mm512_mask_sub_ps(erf, negative, _mm512_setzero_ps(), erf);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

__attribute__((target("avx512f,fma")))
static void pkm_bias_gelu_avx512_body(float *x, const float *bias, size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(bias + i));
        _mm512_storeu_ps(x + i, pkm_gelu16(v));
    }
    if (i < count) {
        __mmask16 mask = (__mmask16)((1u << (count - i)) - 1);
        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, x + i), _mm512_maskz_loadu_ps(mask, bias + i));
        _mm512_mask_storeu_ps(x + i, mask, pkm_gelu16(v));
    }
}

int pkm_bias_gelu_avx512(float *x, const float *bias, size_t count) {
    static int supported = -1;
    if (supported < 0) supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    if (!supported) return 0;
    pkm_bias_gelu_avx512_body(x, bias, count);
    return 1;
}
#else
int pkm_bias_gelu_avx512(float *x, const float *bias, size_t count) { (void)x; (void)bias; (void)count; return 0; }
#endif
