/* Products with W as a GGUF stores it (Q4_1 or Q8_0, blocks of 32 along K): fp32 activations, fp32
 * accumulation, no FMA contraction the source does not write. OpenMP over output features, in
 * guided chunks rather than halves: where the host slows one of the two cores, the other takes
 * the later, smaller chunks instead of waiting at the barrier. A feature's sums are one thread's
 * whichever takes it, so the split changes no result.
 *
 * Up to PANEL_ROWS - 1 rows (decoding, drafts being verified), each row is summed as a one-row
 * product sums it, d * (q . x) per block plus, for Q4_1, m times the block's sum of x, so a row's
 * result does not depend on how many rows share its step; row tiles unpack each block once for
 * MT rows (MT_WIDE where the CPU has AVX-512VL). From PANEL_ROWS rows on, panels: the weights
 * dequantized once for all rows. */
#include "kernels.h"
#include "simd.h"
/* Rows of x per row tile: a tile's accumulators and unpacked weights fill AVX2's 16 vector registers
 * at 4 rows; AVX-512VL's 32 registers hold 8 rows of the same 256-bit sums (same instructions, same
 * order, so the same results), which unpacks each block once for a whole drafted step. */
#define MT 4
#define MT_WIDE 8
/* Products of a few rows stream each weight matrix once and are memory-bound, and the hardware
 * prefetcher alone does not keep the memory busy: the loops prefetch this many bytes ahead in the
 * quants (a quarter of it in the scales). docs/performance.md has the measurement. */
#define AHEAD 2048

/* Q4_1: byte j of a block holds weight j (low nibble) and weight j + 16 (high nibble). */
#define Q4_PAIR(WA, WB, Q, D, M)                                                         \
    {                                                                                    \
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((Q) + g * 16 + h * 8))); \
        __m256 dv = _mm256_set1_ps(h2f((D)[g])), mv = _mm256_set1_ps(h2f((M)[g]));                  \
        WA = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15))), dv), mv); \
        WB = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), dv), mv); \
    }
#define Q8_PAIR(WA, WB, Q, D)                                                            \
    {                                                                                    \
        __m256 dv = _mm256_set1_ps(h2f((D)[g]));                                            \
        WA = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((Q) + g * QK + h * 8)))), dv); \
        WB = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((Q) + g * QK + 16 + h * 8)))), dv); \
    }

/* One matrix as stored: Q4_1 (q4, d, m) or Q8_0 (q8, d). */
typedef struct {
    const uint8_t *q4;
    const int8_t *q8;
    const f16 *d, *m;
} Blocks;

/* ---- steps of many rows: panels ----
 * Past PANEL_ROWS rows, NR output features at a time are dequantized whole into an fp32 buffer
 * (once for all rows), and a 16-row x NR micro-kernel runs over x transposed (rows along the
 * vector lanes): per k, 2 loads of x, NR broadcasts of weights, 2*NR FMAs, all in registers. */
#define NR 6
#define PANEL_CHUNK 64 /* rows of x per pass over the panels */
#define PANEL_CHUNK_BF16 128 /* the same in bf16, whose x takes half the bytes */

/* Rows of x per pass over the panels: at most `most`, the passes near-equal (multiples of 16), as
 * each pass dequantizes every weight again. */
static inline int64_t pass_rows(int64_t Mp, int64_t most) {
    const int64_t passes = (Mp + most - 1) / most;
    return ((Mp + passes - 1) / passes + 15) & ~(int64_t)15;
}

/* Columns k0 .. k0+kc of output features n0 .. n0+nr of w (Q4_1 or Q8_0), dequantized into buf [nr, kc]. */
static void dequant_rows(const Blocks *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, float *buf) {
    const int64_t G = K / QK;
    for (int j = 0; j < nr; j++) {
        const uint8_t *q4 = w->q4 ? w->q4 + (n0 + j) * (K / 2) : 0;
        const int8_t *q8 = w->q8 ? w->q8 + (n0 + j) * K : 0;
        const f16 *dr = w->d + (n0 + j) * G, *mr = w->m ? w->m + (n0 + j) * G : 0;
        for (int64_t g = k0 / QK; g < (k0 + kc) / QK; g++)
            for (int h = 0; h < 2; h++) {
                __m256 wa, wb;
                if (q4) Q4_PAIR(wa, wb, q4, dr, mr)
                else Q8_PAIR(wa, wb, q8, dr)
                _mm256_storeu_ps(buf + j * kc + g * QK - k0 + h * 8, wa);
                _mm256_storeu_ps(buf + j * kc + g * QK - k0 + 16 + h * 8, wb);
            }
    }
}

/* K is taken in chunks of at most KC_MAX (whole blocks, near-equal): a chunk's dequantized panel
 * (NR x kc floats) and x's rows for one micro-tile (kc x 16) stay in L1 across the tile. */
#define KC_MAX 576
static inline int64_t k_chunk(int64_t K) {
    const int64_t chunks = (K + KC_MAX - 1) / KC_MAX;
    return ((K / QK + chunks - 1) / chunks) * QK;
}

/* A tile's sums into y: acc[j][h] holds rows m0 + 8h .. m0 + 8h + 8 of feature n0 + j, for j < nr
 * and the tile's `rows` (8 or 16); rows at or past M are padding. */
static inline __attribute__((always_inline)) void put_tile(const __m256 acc[NR][2], int nr, int rows, int64_t m0,
                                                          int64_t M, float *y, int64_t N, int64_t n0, int add) {
    float out[NR][16];
    for (int j = 0; j < nr; j++) {
        _mm256_storeu_ps(out[j], acc[j][0]);
        if (rows > 8) _mm256_storeu_ps(out[j] + 8, acc[j][1]);
    }
    for (int r = 0; r < rows && m0 + r < M; r++) {
        float *yr = y + (m0 + r) * N + n0;
        for (int j = 0; j < nr; j++) yr[j] = (add ? yr[j] : 0.0f) + out[j][r];
    }
}

/* y[m0 .. m0+16 (or 8), n0 .. n0+nr] (+)= xT-rows . buf-rows; rows at or past M are padding. */
static inline __attribute__((always_inline)) void micro(const float *xT, int64_t Mp, int64_t K, const float *buf,
        const int nr, const int two, int64_t m0, int64_t M, float *y, int64_t N, int64_t n0, int add) {
    __m256 acc[NR][2];
    for (int j = 0; j < NR; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m256 a0 = _mm256_loadu_ps(xT + k * Mp + m0);
        __m256 a1 = two ? _mm256_loadu_ps(xT + k * Mp + m0 + 8) : a0;
        for (int j = 0; j < NR; j++) {
            if (j < nr) {
                __m256 w = _mm256_broadcast_ss(buf + j * K + k);
                acc[j][0] = _mm256_fmadd_ps(w, a0, acc[j][0]);
                if (two) acc[j][1] = _mm256_fmadd_ps(w, a1, acc[j][1]);
            }
        }
    }
    put_tile(acc, nr, two ? 16 : 8, m0, M, y, N, n0, add);
}

/* The full 6-feature x 16-row micro-tile, its 12 accumulators named so that they stay in registers. */
static inline void micro6x16(const float *xT, int64_t Mp, int64_t K, const float *buf, int64_t m0, int64_t M,
                             float *y, int64_t N, int64_t n0, int add) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *b0 = buf, *b1 = buf + K, *b2 = buf + 2 * K, *b3 = buf + 3 * K, *b4 = buf + 4 * K, *b5 = buf + 5 * K;
    for (int64_t k = 0; k < K; k++) {
        const __m256 a0 = _mm256_loadu_ps(xT + k * Mp + m0), a1 = _mm256_loadu_ps(xT + k * Mp + m0 + 8);
        __m256 w = _mm256_broadcast_ss(b0 + k);
        c00 = _mm256_fmadd_ps(w, a0, c00); c01 = _mm256_fmadd_ps(w, a1, c01);
        w = _mm256_broadcast_ss(b1 + k);
        c10 = _mm256_fmadd_ps(w, a0, c10); c11 = _mm256_fmadd_ps(w, a1, c11);
        w = _mm256_broadcast_ss(b2 + k);
        c20 = _mm256_fmadd_ps(w, a0, c20); c21 = _mm256_fmadd_ps(w, a1, c21);
        w = _mm256_broadcast_ss(b3 + k);
        c30 = _mm256_fmadd_ps(w, a0, c30); c31 = _mm256_fmadd_ps(w, a1, c31);
        w = _mm256_broadcast_ss(b4 + k);
        c40 = _mm256_fmadd_ps(w, a0, c40); c41 = _mm256_fmadd_ps(w, a1, c41);
        w = _mm256_broadcast_ss(b5 + k);
        c50 = _mm256_fmadd_ps(w, a0, c50); c51 = _mm256_fmadd_ps(w, a1, c51);
    }
    const __m256 acc[NR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    put_tile(acc, NR, 16, m0, M, y, N, n0, add);
}

static inline void micro6x8(const float *xT, int64_t Mp, int64_t K, const float *buf, int64_t m0, int64_t M,
                            float *y, int64_t N, int64_t n0, int add) {
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    const float *b0 = buf, *b1 = buf + K, *b2 = buf + 2 * K, *b3 = buf + 3 * K, *b4 = buf + 4 * K, *b5 = buf + 5 * K;
    for (int64_t k = 0; k < K; k++) {
        const __m256 a = _mm256_loadu_ps(xT + k * Mp + m0);
        c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(b0 + k), a, c0);
        c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(b1 + k), a, c1);
        c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(b2 + k), a, c2);
        c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(b3 + k), a, c3);
        c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(b4 + k), a, c4);
        c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(b5 + k), a, c5);
    }
    const __m256 z = _mm256_setzero_ps(), acc[NR][2] = {{c0, z}, {c1, z}, {c2, z}, {c3, z}, {c4, z}, {c5, z}};
    put_tile(acc, NR, 8, m0, M, y, N, n0, add);
}

/* Rows m_begin .. m_end (multiples of 8) of output features n0 .. n0+nr. */
static void panel(const float *xT, int64_t Mp, int64_t M, int64_t K, const float *buf, int nr, float *y, int64_t N,
                  int64_t n0, int add, int64_t m_begin, int64_t m_end) {
    for (int64_t m0 = m_begin; m0 < m_end; m0 += 16) {
        int two = m_end - m0 >= 16;
        if (nr == NR && two) micro6x16(xT, Mp, K, buf, m0, M, y, N, n0, add);
        else if (nr == NR) micro6x8(xT, Mp, K, buf, m0, M, y, N, n0, add);
        else if (two) micro(xT, Mp, K, buf, nr, 1, m0, M, y, N, n0, add);
        else micro(xT, Mp, K, buf, nr, 0, m0, M, y, N, n0, add);
    }
}

/* How many of M rows the panels take: none below PANEL_ROWS; else all, but for a remainder of
 * fewer than TAIL_TILE_ROWS past a multiple of 8, which row tiles take for less than a padded
 * 8-row micro-tile costs. */
#define TAIL_TILE_ROWS 4
static inline int64_t panel_rows(int64_t M) {
    if (M < PANEL_ROWS) return 0;
    return M % 8 < TAIL_TILE_ROWS ? M - M % 8 : M;
}

static inline int64_t padded_rows(int64_t M) { return (M + 7) & ~(int64_t)7; }

/* x [M, K] as xT [K, mp] (mp: M rounded up to 8, zero rows after M). */
static void transpose(const float *x, int64_t M, int64_t K, float *xT) {
    const int64_t mp = padded_rows(M);
    #pragma omp parallel for schedule(static) if (M * K > 16384)
    for (int64_t k0 = 0; k0 < K; k0 += 8) { /* K % 32 == 0: 8 columns of x, read a row at a time */
        for (int64_t r = 0; r < M; r++) {
            float v[8];
            _mm256_storeu_ps(v, _mm256_loadu_ps(x + r * K + k0));
            for (int i = 0; i < 8; i++) xT[(k0 + i) * mp + r] = v[i];
        }
        for (int i = 0; i < 8; i++)
            for (int64_t r = M; r < mp; r++) xT[(k0 + i) * mp + r] = 0.0f;
    }
}

/* ---- panels in bf16 (a caller's choice per call, taken where the CPU has AVX512-BF16) ----
 * The same panels with each activation and each dequantized weight rounded to bf16 (nearest even)
 * and multiplied in pairs along K by vdpbf16ps into fp32 sums: two multiply-adds per lane and
 * instruction where an FMA does one, so a compute-bound step (many rows) takes about half the
 * instructions. The weights and activations are rounded, not the sums; the quality test holds it
 * to the same floor as the fp32 panels. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512bf16")

/* As dequant_rows, into bf16 pairs: buf [nr, kc / 2] 32-bit words, word i of a row holding
 * columns 2i (low half) and 2i + 1. */
static void dequant_rows_bf16(const Blocks *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, uint32_t *buf) {
    const int64_t G = K / QK;
    for (int j = 0; j < nr; j++) {
        const uint8_t *q4 = w->q4 ? w->q4 + (n0 + j) * (K / 2) : 0;
        const int8_t *q8 = w->q8 ? w->q8 + (n0 + j) * K : 0;
        const f16 *dr = w->d + (n0 + j) * G, *mr = w->m ? w->m + (n0 + j) * G : 0;
        uint16_t *row = (uint16_t *)(buf + j * (kc / 2));
        for (int64_t g = k0 / QK; g < (k0 + kc) / QK; g++)
            for (int h = 0; h < 2; h++) {
                __m256 wa, wb;
                if (q4) Q4_PAIR(wa, wb, q4, dr, mr)
                else Q8_PAIR(wa, wb, q8, dr)
                _mm_storeu_si128((__m128i *)(row + g * QK - k0 + h * 8), (__m128i)_mm256_cvtneps_pbh(wa));
                _mm_storeu_si128((__m128i *)(row + g * QK - k0 + 16 + h * 8), (__m128i)_mm256_cvtneps_pbh(wb));
            }
    }
}

/* x [M, K] as xT [K / 2, mp] bf16 pairs (word (i, r): columns 2i and 2i + 1 of row r), zero rows after M. */
static void transpose_bf16(const float *x, int64_t M, int64_t K, uint32_t *xT) {
    const int64_t mp = padded_rows(M);
    #pragma omp parallel for schedule(static) if (M * K > 16384)
    for (int64_t k0 = 0; k0 < K; k0 += 16) { /* K % 32 == 0: 16 columns of x, 8 pairs */
        for (int64_t r = 0; r < M; r++) {
            uint32_t v[8];
            _mm256_storeu_si256((__m256i *)v, (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + r * K + k0)));
            for (int i = 0; i < 8; i++) xT[(k0 / 2 + i) * mp + r] = v[i];
        }
        for (int i = 0; i < 8; i++)
            for (int64_t r = M; r < mp; r++) xT[(k0 / 2 + i) * mp + r] = 0;
    }
}

#define DP(c, w, a) c = _mm256_dpbf16_ps(c, (__m256bh)(w), (__m256bh)(a))

/* micro6x16 in bf16 pairs: K2 pairs along K. */
static inline void micro6x16_bf16(const uint32_t *xT, int64_t Mp, int64_t K2, const uint32_t *buf, int64_t m0,
                                  int64_t M, float *y, int64_t N, int64_t n0, int add) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const uint32_t *b0 = buf, *b1 = buf + K2, *b2 = buf + 2 * K2, *b3 = buf + 3 * K2, *b4 = buf + 4 * K2,
                   *b5 = buf + 5 * K2;
    for (int64_t k = 0; k < K2; k++) {
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)(xT + k * Mp + m0));
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)(xT + k * Mp + m0 + 8));
        __m256i w = _mm256_set1_epi32((int)b0[k]);
        DP(c00, w, a0); DP(c01, w, a1);
        w = _mm256_set1_epi32((int)b1[k]);
        DP(c10, w, a0); DP(c11, w, a1);
        w = _mm256_set1_epi32((int)b2[k]);
        DP(c20, w, a0); DP(c21, w, a1);
        w = _mm256_set1_epi32((int)b3[k]);
        DP(c30, w, a0); DP(c31, w, a1);
        w = _mm256_set1_epi32((int)b4[k]);
        DP(c40, w, a0); DP(c41, w, a1);
        w = _mm256_set1_epi32((int)b5[k]);
        DP(c50, w, a0); DP(c51, w, a1);
    }
    const __m256 acc[NR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    put_tile(acc, NR, 16, m0, M, y, N, n0, add);
}

/* Any nr <= NR features, 16 (two) or 8 rows. */
static inline __attribute__((always_inline)) void micro_bf16(const uint32_t *xT, int64_t Mp, int64_t K2,
        const uint32_t *buf, const int nr, const int two, int64_t m0, int64_t M, float *y, int64_t N, int64_t n0,
        int add) {
    __m256 acc[NR][2];
    for (int j = 0; j < NR; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K2; k++) {
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)(xT + k * Mp + m0));
        const __m256i a1 = two ? _mm256_loadu_si256((const __m256i *)(xT + k * Mp + m0 + 8)) : a0;
        for (int j = 0; j < NR; j++) {
            if (j < nr) {
                const __m256i w = _mm256_set1_epi32((int)buf[j * K2 + k]);
                DP(acc[j][0], w, a0);
                if (two) DP(acc[j][1], w, a1);
            }
        }
    }
    put_tile(acc, nr, two ? 16 : 8, m0, M, y, N, n0, add);
}
#undef DP

static void panel_bf16(const uint32_t *xT, int64_t Mp, int64_t M, int64_t K, const uint32_t *buf, int nr, float *y,
                       int64_t N, int64_t n0, int add, int64_t m_begin, int64_t m_end) {
    for (int64_t m0 = m_begin; m0 < m_end; m0 += 16) {
        int two = m_end - m0 >= 16;
        if (nr == NR && two) micro6x16_bf16(xT, Mp, K / 2, buf, m0, M, y, N, n0, add);
        else if (two) micro_bf16(xT, Mp, K / 2, buf, nr, 1, m0, M, y, N, n0, add);
        else micro_bf16(xT, Mp, K / 2, buf, nr, 0, m0, M, y, N, n0, add);
    }
}

#pragma GCC pop_options

int bf16_panels_supported(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vl") &&
                __builtin_cpu_supports("avx512bw");
    }
    return known;
}

/* One Q4_1 block's quants . x (x0..x3: the block's 32 activations), unscaled. */
static inline __m256 q4_block_dot(const uint8_t *q, __m256 x0, __m256 x1, __m256 x2, __m256 x3) {
    const __m256i f = _mm256_set1_epi32(15);
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
    const __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8)));
    __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, f)), x0);
    t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(u, f)), x1, t);
    t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), x2, t);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(u, 4)), x3, t);
}

/* One Q8_0 block's quants . x, unscaled. */
static inline __m256 q8_block_dot(const int8_t *q, __m256 x0, __m256 x1, __m256 x2, __m256 x3) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)q);
    const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), x0);
    t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo))), x1, t);
    t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), x2, t);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi))), x3, t);
}

/* Scales g0 .. g0+8 of a row as floats (zero past G): converted eight at a time, then each block's
 * broadcast from memory, where widening it alone cost three instructions a block. Exact, as h2f. */
static inline void scales8(const f16 *d, int64_t g0, int64_t G, float *out) {
    if (g0 + 8 <= G) {
        _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(d + g0))));
        return;
    }
    for (int64_t i = 0; i < 8; i++) out[i] = g0 + i < G ? h2f(d[g0 + i]) : 0.0f;
}

/* A Q4_1 row's offsets . one row's block sums: sum_g m[g] * xs[g], eight blocks a vector, then the
 * tail. The one-row products and the row tiles both take it from here, so a row's sum is the same
 * in either. */
static inline float m_dot(const f16 *m, const float *xs, int64_t G) {
    __m256 acc = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + 8 <= G; g += 8)
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(m + g))), _mm256_loadu_ps(xs + g), acc);
    float s = hsum(acc);
    for (; g < G; g++) s += h2f(m[g]) * xs[g];
    return s;
}

/* The block sums of rows 0 .. M of x, xs [M, K / QK], as the one-row products take them. */
static void block_sums(const float *x, int64_t M, int64_t K, float *xs) {
    const int64_t G = K / QK;
    for (int64_t r = 0; r < M; r++)
        for (int64_t g = 0; g < G; g++) {
            const float *xg = x + r * K + g * QK;
            const __m256 a = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xg), _mm256_loadu_ps(xg + 8)),
                                           _mm256_add_ps(_mm256_loadu_ps(xg + 16), _mm256_loadu_ps(xg + 24)));
            xs[r * G + g] = hsum(a);
        }
}

/* One row (a decode step of one sequence): y[n] = sum_g d[n,g] * (q[n,g] . x[g]) + m[n,g] * sum(x[g]),
 * so a block costs its unpacking, 4 FMAs and one scaling, two output features at a time. */
static void q4_1_gemv(const float *x, int64_t K, const uint8_t *qs, const f16 *d, const f16 *m, int64_t N,
                      float *y, int add, float *xs /* [K / QK] */) {
    const int64_t G = K / QK;
    block_sums(x, 1, K, xs);
    #pragma omp parallel for schedule(guided, 16)
    for (int64_t n = 0; n < N; n += 2) {
        const int two = n + 1 < N;
        const uint8_t *q0 = qs + n * (K / 2), *q1 = two ? q0 + K / 2 : q0;
        const f16 *d0 = d + n * G, *d1 = two ? d0 + G : d0, *m0 = m + n * G, *m1 = two ? m0 + G : m0;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
        for (int64_t g0 = 0; g0 < G; g0 += 8) {
            float s0[8], s1[8];
            scales8(d0, g0, G, s0);
            scales8(d1, g0, G, s1);
            _mm_prefetch((const char *)(d0 + g0) + AHEAD / 8, _MM_HINT_T0);
            _mm_prefetch((const char *)(m0 + g0) + AHEAD / 8, _MM_HINT_T0);
            for (int64_t g = g0; g < g0 + 8 && g < G; g++) {
                const float *xg = x + g * QK;
                const __m256 x0 = _mm256_loadu_ps(xg), x1 = _mm256_loadu_ps(xg + 8);
                const __m256 x2 = _mm256_loadu_ps(xg + 16), x3 = _mm256_loadu_ps(xg + 24);
                _mm_prefetch((const char *)(q0 + g * 16) + AHEAD, _MM_HINT_T0);
                acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s0 + g - g0), q4_block_dot(q0 + g * 16, x0, x1, x2, x3), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(s1 + g - g0), q4_block_dot(q1 + g * 16, x0, x1, x2, x3), acc1);
            }
        }
        y[n] = (add ? y[n] : 0.0f) + hsum(acc0) + m_dot(m0, xs, G);
        if (two) y[n + 1] = (add ? y[n + 1] : 0.0f) + hsum(acc1) + m_dot(m1, xs, G);
    }
}

/* One row of Q8_0: y[n] = sum_g d[n,g] * (q[n,g] . x[g]), two output features at a time. */
static void q8_0_gemv(const float *x, int64_t K, const int8_t *qs, const f16 *d, int64_t N, float *y, int add) {
    const int64_t G = K / QK;
    #pragma omp parallel for schedule(guided, 16)
    for (int64_t n = 0; n < N; n += 2) {
        const int two = n + 1 < N;
        const int8_t *q0 = qs + n * K, *q1 = two ? q0 + K : q0;
        const f16 *d0 = d + n * G, *d1 = two ? d0 + G : d0;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
        for (int64_t g0 = 0; g0 < G; g0 += 8) {
            float s0[8], s1[8];
            scales8(d0, g0, G, s0);
            scales8(d1, g0, G, s1);
            for (int64_t g = g0; g < g0 + 8 && g < G; g++) {
                const float *xg = x + g * QK;
                const __m256 x0 = _mm256_loadu_ps(xg), x1 = _mm256_loadu_ps(xg + 8);
                const __m256 x2 = _mm256_loadu_ps(xg + 16), x3 = _mm256_loadu_ps(xg + 24);
                _mm_prefetch((const char *)(q0 + g * QK) + AHEAD, _MM_HINT_T0);
                acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s0 + g - g0), q8_block_dot(q0 + g * QK, x0, x1, x2, x3), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(s1 + g - g0), q8_block_dot(q1 + g * QK, x0, x1, x2, x3), acc1);
            }
        }
        y[n] = (add ? y[n] : 0.0f) + hsum(acc0);
        if (two) y[n + 1] = (add ? y[n + 1] : 0.0f) + hsum(acc1);
    }
}

/* A Q4_1 block's 32 quants as floats: weights 0-7, 8-15 (low nibbles), 16-23, 24-31 (high). */
static inline void q4_unpack(const uint8_t *q, __m256 *a, __m256 *b, __m256 *c, __m256 *e) {
    const __m256i f = _mm256_set1_epi32(15);
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
    const __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8)));
    *a = _mm256_cvtepi32_ps(_mm256_and_si256(v, f));
    *b = _mm256_cvtepi32_ps(_mm256_and_si256(u, f));
    *c = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
    *e = _mm256_cvtepi32_ps(_mm256_srli_epi32(u, 4));
}

static inline void q8_unpack(const int8_t *q, __m256 *a, __m256 *b, __m256 *c, __m256 *e) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)q);
    const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    *a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    *b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo)));
    *c = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    *e = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi)));
}

/* The unpacked quants . one row's block of x, in the order q4_block_dot and q8_block_dot sum. */
static inline __m256 dot4(__m256 a, __m256 b, __m256 c, __m256 e, const float *xg) {
    __m256 t = _mm256_mul_ps(a, _mm256_loadu_ps(xg));
    t = _mm256_fmadd_ps(b, _mm256_loadu_ps(xg + 8), t);
    t = _mm256_fmadd_ps(c, _mm256_loadu_ps(xg + 16), t);
    return _mm256_fmadd_ps(e, _mm256_loadu_ps(xg + 24), t);
}

/* Output features n, n+1 (the second absent for an odd tail: `two`) over rows r0 .. r0+mt of x,
 * each block unpacked once for the tile's rows. Each row's sums are the one-row products' own,
 * in their order (d * (q . x) per block, plus m * its block sum for Q4_1), so a row's result does
 * not depend on how many rows share its step, up to PANEL_ROWS. */
static inline __attribute__((always_inline)) void tile(const float *x, const float *xs, int64_t K, int64_t N, int r0,
        int mt, const int q4, const Blocks *w, int64_t n, int two, int add, float *y) {
    const int64_t G = K / QK;
    const int64_t stride = q4 ? K / 2 : K;
    const uint8_t *p0 = q4 ? w->q4 + n * stride : (const uint8_t *)(w->q8 + n * stride), *p1 = two ? p0 + stride : p0;
    const f16 *d0 = w->d + n * G, *d1 = two ? d0 + G : d0;
    const f16 *m0 = q4 ? w->m + n * G : 0, *m1 = q4 && two ? m0 + G : m0;
    __m256 acc0[MT_WIDE], acc1[MT_WIDE];
    for (int r = 0; r < MT_WIDE; r++) { acc0[r] = acc1[r] = _mm256_setzero_ps(); }
    for (int64_t g = 0; g < G; g++) {
        __m256 a0, b0, c0, e0, a1, b1, c1, e1;
        if (q4) {
            _mm_prefetch((const char *)(p0 + g * 16) + AHEAD, _MM_HINT_T0);
            _mm_prefetch((const char *)(d0 + g) + AHEAD / 8, _MM_HINT_T0);
            _mm_prefetch((const char *)(m0 + g) + AHEAD / 8, _MM_HINT_T0);
            q4_unpack(p0 + g * 16, &a0, &b0, &c0, &e0);
            q4_unpack(p1 + g * 16, &a1, &b1, &c1, &e1);
        } else {
            _mm_prefetch((const char *)(p0 + g * QK) + AHEAD, _MM_HINT_T0);
            q8_unpack((const int8_t *)p0 + g * QK, &a0, &b0, &c0, &e0);
            q8_unpack((const int8_t *)p1 + g * QK, &a1, &b1, &c1, &e1);
        }
        const __m256 dv0 = _mm256_set1_ps(h2f(d0[g])), dv1 = _mm256_set1_ps(h2f(d1[g]));
        for (int r = 0; r < MT_WIDE; r++) {
            if (r < mt) {
                const float *xg = x + (int64_t)(r0 + r) * K + g * QK;
                acc0[r] = _mm256_fmadd_ps(dv0, dot4(a0, b0, c0, e0, xg), acc0[r]);
                acc1[r] = _mm256_fmadd_ps(dv1, dot4(a1, b1, c1, e1, xg), acc1[r]);
            }
        }
    }
    for (int r = 0; r < mt; r++) {
        float *yr = y + (int64_t)(r0 + r) * N + n;
        const float *xsr = xs + (int64_t)(r0 + r) * G;
        yr[0] = (add ? yr[0] : 0.0f) + hsum(acc0[r]) + (q4 ? m_dot(m0, xsr, G) : 0.0f);
        if (two) yr[1] = (add ? yr[1] : 0.0f) + hsum(acc1[r]) + (q4 ? m_dot(m1, xsr, G) : 0.0f);
    }
}

/* Rows 0 .. P of y (P >= PANEL_ROWS) by panels; work: x transposed, then one panel buffer per thread. */
static void panels(const float *x, int64_t P, int64_t K, const Blocks *w, int64_t N, float *y, int add, int bf16,
                   float *work) {
    bf16 = bf16 && bf16_panels_supported();
    const int64_t Mp = padded_rows(P), kc_max = k_chunk(K);
    /* a chunk of x stays in cache across panels; bf16 x and panels take half the words of fp32's */
    const int64_t chunk = bf16 ? pass_rows(Mp, PANEL_CHUNK_BF16) : PANEL_CHUNK, words = bf16 ? 2 : 1;
    if (bf16) transpose_bf16(x, P, K, (uint32_t *)work);
    else transpose(x, P, K, work);
    #pragma omp parallel
    {
        float *buf = work + (K * Mp + omp_get_thread_num() * NR * kc_max) / words;
        for (int64_t mc = 0; mc < Mp; mc += chunk) {
            int64_t m_end = Mp - mc < chunk ? Mp : mc + chunk;
            #pragma omp for schedule(guided, 2)
            for (int64_t n0 = 0; n0 < N; n0 += NR) {
                int nr = N - n0 < NR ? (int)(N - n0) : NR;
                for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
                    const int64_t kc = K - k0 < kc_max ? K - k0 : kc_max;
                    if (bf16) {
                        dequant_rows_bf16(w, K, n0, nr, k0, kc, (uint32_t *)buf);
                        panel_bf16((uint32_t *)work + k0 / 2 * Mp, Mp, P, kc, (uint32_t *)buf, nr, y, N, n0,
                                   add || k0 > 0, mc, m_end);
                    } else {
                        dequant_rows(w, K, n0, nr, k0, kc, buf);
                        panel(work + k0 * Mp, Mp, P, kc, buf, nr, y, N, n0, add || k0 > 0, mc, m_end);
                    }
                }
            }
        }
    }
}

/* Output features n, n+1 over all M rows, in tiles of up to `most` rows (MT or MT_WIDE, a constant
 * where inlined). Each tile's row count and the weights' kind are constants in its own inlined loop;
 * cases past `most` are never taken. */
static inline __attribute__((always_inline)) void tile_rows(const float *x, const float *xs, int64_t M, int64_t K,
        const Blocks *w, int64_t N, int64_t n, int add, float *y, const int most) {
    const int two = n + 1 < N, q4 = w->q4 != 0;
    for (int r0 = 0; r0 < M; r0 += most) {
        const int mt = M - r0 < most ? (int)(M - r0) : most;
#define TILE(rows) (q4 ? tile(x, xs, K, N, r0, rows, 1, w, n, two, add, y) : tile(x, xs, K, N, r0, rows, 0, w, n, two, add, y))
        switch (mt) {
            case 1: TILE(1); break;
            case 2: TILE(2); break;
            case 3: TILE(3); break;
            case 4: TILE(4); break;
            case 5: TILE(5); break;
            case 6: TILE(6); break;
            case 7: TILE(7); break;
            default: TILE(most); break; /* a whole tile */
        }
#undef TILE
    }
}

static void tiles_avx2(const float *x, const float *xs, int64_t M, int64_t K, const Blocks *w, int64_t N, float *y,
                       int add) {
    #pragma omp parallel for schedule(guided, 8)
    for (int64_t n = 0; n < N; n += 2) tile_rows(x, xs, M, K, w, N, n, add, y, MT);
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl")
static void tiles_wide(const float *x, const float *xs, int64_t M, int64_t K, const Blocks *w, int64_t N, float *y,
                       int add) {
    #pragma omp parallel for schedule(guided, 8)
    for (int64_t n = 0; n < N; n += 2) tile_rows(x, xs, M, K, w, N, n, add, y, MT_WIDE);
}
#pragma GCC pop_options

/* Whether the row tiles take 8 rows in AVX-512VL's registers: -1 until first asked, then the CPU's
 * answer, or what wide_row_tiles last set. */
static int wide = -1;

int wide_row_tiles(int on) {
    if (wide < 0 || on >= 0) {
        __builtin_cpu_init();
        wide = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && on != 0;
    }
    return wide;
}

/* Rows 0 .. M of y (M small) by row tiles: two output features at a time; xs: work for the rows'
 * block sums. */
static void tiles(const float *x, int64_t M, int64_t K, const Blocks *w, int64_t N, float *y, int add, float *xs) {
    if (w->q4) block_sums(x, M, K, xs);
    if (wide_row_tiles(-1)) tiles_wide(x, xs, M, K, w, N, y, add);
    else tiles_avx2(x, xs, M, K, w, N, y, add);
}

static void matmul(const float *x, int64_t M, int64_t K, const Blocks *w, int64_t N, float *y, int add, int bf16,
                   float *work) {
    const int64_t P = panel_rows(M);
    if (P) panels(x, P, K, w, N, y, add, bf16, work);
    if (P < M) tiles(x + P * K, M - P, K, w, N, y + P * N, add, work); /* the rows left: row tiles (after the panels: the same work) */
}

/* The panels' transposed x and buffers, or the row tiles' block sums, whichever is more. */
int64_t matmul_work(int64_t M, int64_t K) {
    const int64_t P = panel_rows(M), sums = (M - P) * (K / QK);
    const int64_t panel_work = P ? K * padded_rows(P) + threads() * NR * k_chunk(K) : 0;
    return panel_work > sums ? panel_work : sums;
}

int64_t q4_1_matmul(const float *x, int64_t M, int64_t K, const uint8_t *qs, const f16 *d, const f16 *m,
                    int64_t N, float *y, int add, int bf16, float *work, int64_t work_floats) {
    const int64_t need = matmul_work(M, K);
    if (work_floats < need) return need;
    if (M == 1) {
        q4_1_gemv(x, K, qs, d, m, N, y, add, work);
        return 0;
    }
    const Blocks w = {qs, 0, d, m};
    matmul(x, M, K, &w, N, y, add, bf16, work);
    return 0;
}

int64_t q8_0_matmul(const float *x, int64_t M, int64_t K, const int8_t *qs, const f16 *d, int64_t N, float *y,
                    int add, int bf16, float *work, int64_t work_floats) {
    const int64_t need = matmul_work(M, K);
    if (work_floats < need) return need;
    if (M == 1) {
        q8_0_gemv(x, K, qs, d, N, y, add);
        return 0;
    }
    const Blocks w = {0, qs, d, 0};
    matmul(x, M, K, &w, N, y, add, bf16, work);
    return 0;
}
