#ifndef PKM_KERNELS_H
#define PKM_KERNELS_H
// Hot loops of the pkmz codec (schemas/pkmz.md §6) and of the graft generator, in C so that they
// vectorise without unsafe build flags: byte planes with the sign rotation, a static order-0 rANS
// entropy coder, and the counter-based normal generator. Every function works on caller-owned
// buffers of stated sizes and never allocates more than its documented scratch.
#include <stddef.h>
#include <stdint.h>

/// Splits `count` elements of `element_size` (2, 4 or 8) bytes into byte planes, rotating each
/// little-endian element left by one bit first when `rotate` is non-zero (the sign bit moves to
/// bit 0, so the top plane holds 8 exponent bits). Plane p of the output starts at p * count.
void pkm_planes_split(const void *source, void *destination, size_t count, int element_size, int rotate);

/// The inverse of pkm_planes_split, reading plane p from planes[p] (element_size pointers, each
/// `count` bytes; they may point anywhere, e.g. into a mapped file).
void pkm_planes_join(const uint8_t *const *planes, void *destination, size_t count, int element_size, int rotate);

/// Bytes a rANS segment of `count` symbols may need in the worst case (encoder scratch).
size_t pkm_rans_bound(size_t count);

/// Encodes `count` bytes with static order-0 rANS (schemas/pkmz.md §6.2). Writes at most
/// `capacity` bytes to `destination` and returns how many, or 0 when the result would not fit
/// (the caller then stores the plane raw). `scratch` must hold pkm_rans_bound(count) bytes.
size_t pkm_rans_encode(const uint8_t *source, size_t count, uint8_t *destination, size_t capacity, uint8_t *scratch);

/// Decodes a rANS segment of exactly `length` bytes into exactly `count` bytes. Returns 0, or a
/// negative code when the segment is malformed (never reads or writes outside the two buffers):
/// -1 truncated table, -2 bad frequencies, -3 stream too short, -4 final state or length mismatch.
int pkm_rans_decode(const uint8_t *source, size_t length, uint8_t *destination, size_t count);

/// Output number `index` of SplitMix64 seeded with `key` (the graft generator's counter hash).
uint64_t pkm_splitmix(uint64_t key, uint64_t index);

/// Values `start ..< start + count` of the normal(0, std) stream keyed by `key`
/// (README "Graft"): values 2c and 2c+1 are Box–Muller of the two 32-bit halves of
/// pkm_splitmix(key, c), in float32 with fixed polynomials for log, sin and cos and no fused
/// multiply-adds, so every CPU and every thread count gives the same bytes.
void pkm_normal_fill(uint64_t key, uint64_t start, float std, float *destination, size_t count);

/// Values `start ..< start + count` of the uniform [-bound, bound) stream keyed by `key`: value i
/// is (2 u - 1) * bound with u the top 24 bits of pkm_splitmix(key, i) times 2^-24.
void pkm_uniform_fill(uint64_t key, uint64_t start, float bound, float *destination, size_t count);

/// x[i] = GELU(x[i] + bias[i]) for i < count (erf form, Abramowitz & Stegun 7.1.26 and the Cephes expf
/// polynomial, as Compute.gelu8 in PKMModel), sixteen lanes at a time with AVX-512F and FMA, selected at run time
/// (function target attribute, no build flags). Returns 1 when done, 0 (x untouched) on CPUs without AVX-512F.
int pkm_bias_gelu_avx512(float *x, const float *bias, size_t count);

#endif
