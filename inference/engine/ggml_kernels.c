/* y[M,N] = x[M,K] . W[N,K]^T with W as a GGUF stores it (Q4_1 or Q8_0, blocks of 32 along K): fp32
 * activations, fp32 accumulation, each weight dequantized in registers exactly as the dequantized
 * model holds it (d * q + m, rounded twice: no FMA contraction). AVX2 + FMA, OpenMP over output
 * features (torch's own OpenMP runtime once torch is loaded).
 *
 * A tile is 2 output features x MT rows of x: its 4 dequantized vectors serve every row of the tile,
 * so a step of a few rows reads and unpacks the 4-bit weights once per MT rows. Built and loaded by
 * kernels.py. */
#include <immintrin.h>
#include <stdint.h>

#define QK 32
#define MT 4 /* rows of x per tile */
/* Products of a few rows stream each weight matrix once and are memory-bound; the hardware
 * prefetcher alone left them at about 10 GB/s of the machine's 21. Prefetching this many bytes
 * ahead in the quants (a quarter of it in the scales) gave, at 1 row, the Q8_0 head 1.7x and the
 * Q4_1 layers 1.08x; at 2 rows 1.4x and 1.05x (A/B in one process). */
#define AHEAD 2048

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Two output features n, n+1 (w1 may equal w0 for an odd tail) over rows r0..r0+mt-1; each step of
 * the inner loop covers weights h*8..h*8+7 (a) and 16+h*8..16+h*8+7 (b) of block g. */
#define TILE_BODY(DEQ, PF)                                                               \
    __m256 acc0[MT], acc1[MT];                                                           \
    for (int r = 0; r < MT; r++) { acc0[r] = _mm256_setzero_ps(); acc1[r] = _mm256_setzero_ps(); } \
    for (int g = 0; g < G; g++) {                                                        \
        PF                                                                               \
        for (int h = 0; h < 2; h++) {                                                    \
            __m256 w0a, w0b, w1a, w1b;                                                   \
            DEQ                                                                          \
            for (int r = 0; r < MT; r++) {                                               \
                if (r < mt) {                                                            \
                    const float *xr = x + (int64_t)(r0 + r) * K + g * QK + h * 8;        \
                    __m256 xa = _mm256_loadu_ps(xr), xb = _mm256_loadu_ps(xr + 16);      \
                    acc0[r] = _mm256_fmadd_ps(w0a, xa, acc0[r]);                         \
                    acc1[r] = _mm256_fmadd_ps(w1a, xa, acc1[r]);                         \
                    acc0[r] = _mm256_fmadd_ps(w0b, xb, acc0[r]);                         \
                    acc1[r] = _mm256_fmadd_ps(w1b, xb, acc1[r]);                         \
                }                                                                        \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
    for (int r = 0; r < mt; r++) {                                                       \
        float *yr = y + (int64_t)(r0 + r) * N + n;                                       \
        yr[0] = (add ? yr[0] : 0.0f) + hsum(acc0[r]);                                    \
        if (two) yr[1] = (add ? yr[1] : 0.0f) + hsum(acc1[r]);                           \
    }

/* Q4_1: byte j of a block holds weight j (low nibble) and weight j + 16 (high nibble). */
#define Q4_PAIR(WA, WB, Q, D, M)                                                         \
    {                                                                                    \
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((Q) + g * 16 + h * 8))); \
        __m256 dv = _mm256_set1_ps((D)[g]), mv = _mm256_set1_ps((M)[g]);                  \
        WA = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15))), dv), mv); \
        WB = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), dv), mv); \
    }
#define Q8_PAIR(WA, WB, Q, D)                                                            \
    {                                                                                    \
        __m256 dv = _mm256_set1_ps((D)[g]);                                              \
        WA = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((Q) + g * QK + h * 8)))), dv); \
        WB = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((Q) + g * QK + 16 + h * 8)))), dv); \
    }

static inline __attribute__((always_inline)) void q4_tile(const float *x, int64_t K, int64_t N, int r0, int mt,
        const uint8_t *qs, const float *d, const float *m, int64_t n, int two, int add, float *y) {
    const int G = (int)(K / QK);
    const uint8_t *q0 = qs + n * (K / 2), *q1 = two ? q0 + K / 2 : q0;
    const float *d0 = d + n * G, *d1 = two ? d0 + G : d0, *m0 = m + n * G, *m1 = two ? m0 + G : m0;
    TILE_BODY(Q4_PAIR(w0a, w0b, q0, d0, m0) Q4_PAIR(w1a, w1b, q1, d1, m1),
              _mm_prefetch((const char *)(q0 + g * 16) + AHEAD, _MM_HINT_T0);
              _mm_prefetch((const char *)(d0 + g) + AHEAD / 4, _MM_HINT_T0);
              _mm_prefetch((const char *)(m0 + g) + AHEAD / 4, _MM_HINT_T0);)
}

static inline __attribute__((always_inline)) void q8_tile(const float *x, int64_t K, int64_t N, int r0, int mt,
        const int8_t *qs, const float *d, int64_t n, int two, int add, float *y) {
    const int G = (int)(K / QK);
    const int8_t *q0 = qs + n * K, *q1 = two ? q0 + K : q0;
    const float *d0 = d + n * G, *d1 = two ? d0 + G : d0;
    TILE_BODY(Q8_PAIR(w0a, w0b, q0, d0) Q8_PAIR(w1a, w1b, q1, d1),
              _mm_prefetch((const char *)(q0 + g * QK) + AHEAD, _MM_HINT_T0);)
}

/* One matrix as stored: Q4_1 (q4, d, m) or Q8_0 (q8, d). */
typedef struct {
    const uint8_t *q4;
    const int8_t *q8;
    const float *d, *m;
} Blocks;

/* ---- steps of many rows: panels ----
 * Past PANEL_ROWS rows, NR output features at a time are dequantized whole into an fp32 buffer
 * (once for all rows), and a 16-row x NR micro-kernel runs over x transposed (rows along the
 * vector lanes): per k, 2 loads of x, NR broadcasts of weights, 2*NR FMAs, all in registers. */
#define NR 6
#define PANEL_ROWS 8
#define PANEL_CHUNK 64 /* rows of x per pass over the panels */

/* Columns k0 .. k0+kc of output features n0 .. n0+nr of w (Q4_1 or Q8_0), dequantized into buf [nr, kc]. */
static void dequant_rows(const Blocks *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, float *buf) {
    const int64_t G = K / QK;
    for (int j = 0; j < nr; j++) {
        const uint8_t *q4 = w->q4 ? w->q4 + (n0 + j) * (K / 2) : 0;
        const int8_t *q8 = w->q8 ? w->q8 + (n0 + j) * K : 0;
        const float *dr = w->d + (n0 + j) * G, *mr = w->m ? w->m + (n0 + j) * G : 0;
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
    for (int j = 0; j < nr; j++) {
        float out[16];
        _mm256_storeu_ps(out, acc[j][0]);
        _mm256_storeu_ps(out + 8, acc[j][1]);
        for (int r = 0; r < (two ? 16 : 8) && m0 + r < M; r++) {
            float *yr = y + (m0 + r) * N + n0 + j;
            *yr = (add ? *yr : 0.0f) + out[r];
        }
    }
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
    float out[NR][16];
    _mm256_storeu_ps(out[0], c00); _mm256_storeu_ps(out[0] + 8, c01);
    _mm256_storeu_ps(out[1], c10); _mm256_storeu_ps(out[1] + 8, c11);
    _mm256_storeu_ps(out[2], c20); _mm256_storeu_ps(out[2] + 8, c21);
    _mm256_storeu_ps(out[3], c30); _mm256_storeu_ps(out[3] + 8, c31);
    _mm256_storeu_ps(out[4], c40); _mm256_storeu_ps(out[4] + 8, c41);
    _mm256_storeu_ps(out[5], c50); _mm256_storeu_ps(out[5] + 8, c51);
    for (int r = 0; r < 16 && m0 + r < M; r++) {
        float *yr = y + (m0 + r) * N + n0;
        for (int j = 0; j < NR; j++) yr[j] = (add ? yr[j] : 0.0f) + out[j][r];
    }
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
    float out[NR][8];
    _mm256_storeu_ps(out[0], c0); _mm256_storeu_ps(out[1], c1); _mm256_storeu_ps(out[2], c2);
    _mm256_storeu_ps(out[3], c3); _mm256_storeu_ps(out[4], c4); _mm256_storeu_ps(out[5], c5);
    for (int r = 0; r < 8 && m0 + r < M; r++) {
        float *yr = y + (m0 + r) * N + n0;
        for (int j = 0; j < NR; j++) yr[j] = (add ? yr[j] : 0.0f) + out[j][r];
    }
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

/* x [M, K] as xT [K, Mp] (Mp: M rounded up to 8, zero rows after M). */
static float *transposed(const float *x, int64_t M, int64_t K, int64_t *Mp) {
    const int64_t mp = *Mp = (M + 7) & ~(int64_t)7;
    float *xT = (float *)__builtin_malloc(sizeof(float) * (size_t)(K * mp));
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
    return xT;
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

/* One row (a decode step of one sequence): y[n] = sum_g d[n,g] * (q[n,g] . x[g]) + m[n,g] * sum(x[g]),
 * so a block costs its unpacking, 4 FMAs and one scaling, two output features at a time. */
static void q4_1_gemv(const float *x, int64_t K, const uint8_t *qs, const float *d, const float *m, int64_t N,
                      float *y, int add) {
    const int64_t G = K / QK;
    float xs[G];
    for (int64_t g = 0; g < G; g++) {
        __m256 a = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(x + g * QK), _mm256_loadu_ps(x + g * QK + 8)),
                                 _mm256_add_ps(_mm256_loadu_ps(x + g * QK + 16), _mm256_loadu_ps(x + g * QK + 24)));
        xs[g] = hsum(a);
    }
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n += 2) {
        const int two = n + 1 < N;
        const uint8_t *q0 = qs + n * (K / 2), *q1 = two ? q0 + K / 2 : q0;
        const float *d0 = d + n * G, *d1 = two ? d0 + G : d0, *m0 = m + n * G, *m1 = two ? m0 + G : m0;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
        float s0 = 0.0f, s1 = 0.0f;
        for (int64_t g = 0; g < G; g++) {
            const float *xg = x + g * QK;
            const __m256 x0 = _mm256_loadu_ps(xg), x1 = _mm256_loadu_ps(xg + 8);
            const __m256 x2 = _mm256_loadu_ps(xg + 16), x3 = _mm256_loadu_ps(xg + 24);
            _mm_prefetch((const char *)(q0 + g * 16) + AHEAD, _MM_HINT_T0);
            _mm_prefetch((const char *)(d0 + g) + AHEAD / 4, _MM_HINT_T0);
            _mm_prefetch((const char *)(m0 + g) + AHEAD / 4, _MM_HINT_T0);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0[g]), q4_block_dot(q0 + g * 16, x0, x1, x2, x3), acc0);
            s0 += m0[g] * xs[g];
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1[g]), q4_block_dot(q1 + g * 16, x0, x1, x2, x3), acc1);
            s1 += m1[g] * xs[g];
        }
        y[n] = (add ? y[n] : 0.0f) + hsum(acc0) + s0;
        if (two) y[n + 1] = (add ? y[n + 1] : 0.0f) + hsum(acc1) + s1;
    }
}

/* One row of Q8_0: y[n] = sum_g d[n,g] * (q[n,g] . x[g]), two output features at a time. */
static void q8_0_gemv(const float *x, int64_t K, const int8_t *qs, const float *d, int64_t N, float *y, int add) {
    const int64_t G = K / QK;
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n += 2) {
        const int two = n + 1 < N;
        const int8_t *q0 = qs + n * K, *q1 = two ? q0 + K : q0;
        const float *d0 = d + n * G, *d1 = two ? d0 + G : d0;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
        for (int64_t g = 0; g < G; g++) {
            const float *xg = x + g * QK;
            const __m256 x0 = _mm256_loadu_ps(xg), x1 = _mm256_loadu_ps(xg + 8);
            const __m256 x2 = _mm256_loadu_ps(xg + 16), x3 = _mm256_loadu_ps(xg + 24);
            _mm_prefetch((const char *)(q0 + g * QK) + AHEAD, _MM_HINT_T0);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0[g]), q8_block_dot(q0 + g * QK, x0, x1, x2, x3), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1[g]), q8_block_dot(q1 + g * QK, x0, x1, x2, x3), acc1);
        }
        y[n] = (add ? y[n] : 0.0f) + hsum(acc0);
        if (two) y[n + 1] = (add ? y[n + 1] : 0.0f) + hsum(acc1);
    }
}

/* Rows 0 .. P of y (P >= PANEL_ROWS) by panels. */
static void panels(const float *x, int64_t P, int64_t K, const Blocks *w, int64_t N, float *y, int add) {
    int64_t Mp;
    float *xT = transposed(x, P, K, &Mp);
    #pragma omp parallel
    {
        const int64_t kc_max = k_chunk(K);
        float *buf = (float *)__builtin_alloca(sizeof(float) * (size_t)(NR * kc_max));
        for (int64_t mc = 0; mc < Mp; mc += PANEL_CHUNK) { /* a chunk of x stays in cache across panels */
            int64_t m_end = Mp - mc < PANEL_CHUNK ? Mp : mc + PANEL_CHUNK;
            #pragma omp for schedule(static)
            for (int64_t n0 = 0; n0 < N; n0 += NR) {
                int nr = N - n0 < NR ? (int)(N - n0) : NR;
                for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
                    const int64_t kc = K - k0 < kc_max ? K - k0 : kc_max;
                    dequant_rows(w, K, n0, nr, k0, kc, buf);
                    panel(xT + k0 * Mp, Mp, P, kc, buf, nr, y, N, n0, add || k0 > 0, mc, m_end);
                }
            }
        }
    }
    __builtin_free(xT);
}

/* Rows 0 .. M of y (M small) by row tiles: two output features at a time, MT rows a tile. */
static void tiles(const float *x, int64_t M, int64_t K, const Blocks *w, int64_t N, float *y, int add) {
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n += 2) {
        int two = n + 1 < N;
        for (int r0 = 0; r0 < M; r0 += MT) {
            int mt = M - r0 < MT ? (int)(M - r0) : MT;
            if (w->q4) {
                switch (mt) {
                    case 1: q4_tile(x, K, N, r0, 1, w->q4, w->d, w->m, n, two, add, y); break;
                    case 2: q4_tile(x, K, N, r0, 2, w->q4, w->d, w->m, n, two, add, y); break;
                    case 3: q4_tile(x, K, N, r0, 3, w->q4, w->d, w->m, n, two, add, y); break;
                    default: q4_tile(x, K, N, r0, MT, w->q4, w->d, w->m, n, two, add, y); break;
                }
            } else {
                switch (mt) {
                    case 1: q8_tile(x, K, N, r0, 1, w->q8, w->d, n, two, add, y); break;
                    case 2: q8_tile(x, K, N, r0, 2, w->q8, w->d, n, two, add, y); break;
                    case 3: q8_tile(x, K, N, r0, 3, w->q8, w->d, n, two, add, y); break;
                    default: q8_tile(x, K, N, r0, MT, w->q8, w->d, n, two, add, y); break;
                }
            }
        }
    }
}

static void matmul(const float *x, int64_t M, int64_t K, const Blocks *w, int64_t N, float *y, int add) {
    const int64_t P = panel_rows(M);
    if (P) panels(x, P, K, w, N, y, add);
    if (P < M) tiles(x + P * K, M - P, K, w, N, y + P * N, add); /* the rows left: row tiles */
}

/* qs [N, K/2] (16 bytes per block, llama.cpp's nibble order), d and m [N, K/32]; add: y += x . W^T. */
void q4_1_matmul(const float *x, int64_t M, int64_t K, const uint8_t *qs, const float *d, const float *m,
                 int64_t N, float *y, int add) {
    if (M == 1) {
        q4_1_gemv(x, K, qs, d, m, N, y, add);
        return;
    }
    const Blocks w = {qs, 0, d, m};
    matmul(x, M, K, &w, N, y, add);
}

/* qs [N, K] int8, d [N, K/32]. */
void q8_0_matmul(const float *x, int64_t M, int64_t K, const int8_t *qs, const float *d, int64_t N, float *y, int add) {
    if (M == 1) {
        q8_0_gemv(x, K, qs, d, N, y, add);
        return;
    }
    const Blocks w = {0, qs, d, 0};
    matmul(x, M, K, &w, N, y, add);
}

/* ---- the rest of a layer, for native steps: fp32 activations, bf16 KV pool ---- */

static inline uint16_t to_bf16(float f) { /* round to nearest even, as torch's .to(torch.bfloat16) */
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* The sums of four vectors' lanes, as one vector of 4. */
static inline __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* y = x / sqrt(mean(x^2) + eps) * w, per row of K (K % 8 == 0). */
void rms_norm(const float *x, int64_t M, int64_t K, const float *w, float eps, float *y) {
    #pragma omp parallel for schedule(static) if (M > 8)
    for (int64_t r = 0; r < M; r++) {
        const float *xr = x + r * K;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t k = 0; k < K; k += 8) {
            __m256 v = _mm256_loadu_ps(xr + k);
            acc = _mm256_fmadd_ps(v, v, acc);
        }
        __m256 s = _mm256_set1_ps(1.0f / __builtin_sqrtf(hsum(acc) / (float)K + eps));
        for (int64_t k = 0; k < K; k += 8)
            _mm256_storeu_ps(y + r * K + k, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + k), s), _mm256_loadu_ps(w + k)));
    }
}

/* In place on the first `heads` heads of each row (row stride `stride`): x * cos + rotate_half(x) * sin,
 * with cos and sin rows [max_pos, dim] taken at each row's position. */
void rope(float *x, int64_t M, int64_t stride, int64_t heads, int64_t dim, const int64_t *pos,
          const float *cos, const float *sin) {
    const int64_t half = dim / 2;
    #pragma omp parallel for schedule(static) if (M > 8)
    for (int64_t r = 0; r < M; r++) {
        const float *c = cos + pos[r] * dim, *s = sin + pos[r] * dim;
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + r * stride + h * dim;
            for (int64_t i = 0; i < half; i += 8) {
                __m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + half + i);
                __m256 ra = _mm256_sub_ps(_mm256_mul_ps(a, _mm256_loadu_ps(c + i)), _mm256_mul_ps(b, _mm256_loadu_ps(s + i)));
                __m256 rb = _mm256_add_ps(_mm256_mul_ps(b, _mm256_loadu_ps(c + half + i)), _mm256_mul_ps(a, _mm256_loadu_ps(s + half + i)));
                _mm256_storeu_ps(v + i, ra);
                _mm256_storeu_ps(v + half + i, rb);
            }
        }
    }
}

/* Row r's `width` floats at x + r * stride + k_off (keys) and + v_off (values) go, as bf16, to pool
 * rows slots[r] (each `width` wide). */
void kv_write(const float *x, int64_t M, int64_t stride, int64_t k_off, int64_t v_off, int64_t width,
              const int64_t *slots, uint16_t *kpool, uint16_t *vpool) {
    for (int64_t r = 0; r < M; r++) {
        const float *k = x + r * stride + k_off, *v = x + r * stride + v_off;
        uint16_t *kd = kpool + slots[r] * width, *vd = vpool + slots[r] * width;
        for (int64_t j = 0; j < width; j++) {
            kd[j] = to_bf16(k[j]);
            vd[j] = to_bf16(v[j]);
        }
    }
}

/* e^x for 8 floats (Cephes' polynomial, as in avx_mathfun): relative error about 2e-7; inputs
 * below -87 give 0 (softmax and silu feed it only x <= 0 or clamp it). */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
    x = _mm256_add_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(2.12194440e-4f)));
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_add_ps(_mm256_mul_ps(y, x), _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(y, x), x), x), _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* y[r, :I] = silu(x[r, :I]) * x[r, I:2I] (I % 8 == 0). */
void silu_mul(const float *x, int64_t M, int64_t I, float *y) {
    #pragma omp parallel for schedule(static) if (M > 4)
    for (int64_t r = 0; r < M; r++)
        for (int64_t i = 0; i < I; i += 8) {
            __m256 g = _mm256_loadu_ps(x + r * 2 * I + i), u = _mm256_loadu_ps(x + r * 2 * I + I + i);
            __m256 sig = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f),
                                                                            exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
            _mm256_storeu_ps(y + r * I + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), u));
        }
}

#define MAX_GROUP 8
const int64_t max_group = MAX_GROUP; /* read by kernels.py, so the limit is stated once */

/* Rows base .. base+n of one KV head in the pool (dim bf16 each, 2 cache lines for dim 64). Decode
 * attention is latency-bound (each sequence's keys are a fresh read from memory): prefetching the
 * next block's keys and this block's values made it 1.2x faster at 40-70 keys and 1.33x at 300
 * (A/B in one process, 64 sequences, 30 layers); two blocks ahead gave nothing more. */
static inline void prefetch_rows(const uint16_t *pool, int64_t base, int64_t n, int64_t kv_heads, int64_t kh, int64_t dim) {
    for (int64_t j = 0; j < n; j++) {
        const char *p = (const char *)(pool + ((base + j) * kv_heads + kh) * dim);
        for (int64_t o = 0; o < dim * 2; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
    }
}

/* Decode attention over the paged bf16 pool: sequence b's one query (row index[b] of q, row stride
 * q_stride, `heads` heads of `dim`) attends to its first lengths[b] keys, found through its block
 * table tables[b] (row stride t_stride); the heads sharing a KV head (at most MAX_GROUP) read each
 * key and value once. out rows as q rows, heads * dim wide. Scores, softmax and sums in fp32;
 * dim % 8 == 0. */
void decode_attention(const float *q, int64_t q_stride, const int64_t *index, int64_t B,
                      const int64_t *tables, int64_t t_stride, const int64_t *lengths, int64_t block_size,
                      const uint16_t *kpool, const uint16_t *vpool, int64_t heads, int64_t kv_heads, int64_t dim,
                      float scale, float *out) {
    const int64_t group = heads / kv_heads;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1) if (B * kv_heads > 2)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t kh = 0; kh < kv_heads; kh++) {
            const int64_t L = lengths[b], Lp = (L + 7) & ~(int64_t)7;
            const int64_t *table = tables + b * t_stride;
            const float *qb = q + index[b] * q_stride + kh * group * dim;
            float scores[Lp * group]; /* block scope: freed each iteration (an alloca here was not) */
            float acc[MAX_GROUP * dim];
            for (int64_t t = 0, blk = 0; t < L; blk++) {
                const int64_t base = table[blk] * block_size;
                if (t + block_size < L) /* the next block's keys, while this one's are summed */
                    prefetch_rows(kpool, table[blk + 1] * block_size, block_size, kv_heads, kh, dim);
                prefetch_rows(vpool, base, block_size, kv_heads, kh, dim); /* values, for after the softmax */
                int64_t j = 0;
                if (group == 3) /* SmolLM2's shape: 4 keys x 3 heads of sums in registers, reduced together */
                    for (; j + 4 <= block_size && t + 4 <= L; j += 4, t += 4) {
                        const uint16_t *k0 = kpool + ((base + j) * kv_heads + kh) * dim, *k1 = k0 + kv_heads * dim;
                        const uint16_t *k2 = k1 + kv_heads * dim, *k3 = k2 + kv_heads * dim;
                        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00;
                        __m256 s12 = s00, s13 = s00, s20 = s00, s21 = s00, s22 = s00, s23 = s00;
                        for (int64_t i = 0; i < dim; i += 8) {
                            const __m256 q0 = _mm256_loadu_ps(qb + i), q1 = _mm256_loadu_ps(qb + dim + i);
                            const __m256 q2 = _mm256_loadu_ps(qb + 2 * dim + i);
                            __m256 kv = bf16x8(k0 + i);
                            s00 = _mm256_fmadd_ps(q0, kv, s00); s10 = _mm256_fmadd_ps(q1, kv, s10); s20 = _mm256_fmadd_ps(q2, kv, s20);
                            kv = bf16x8(k1 + i);
                            s01 = _mm256_fmadd_ps(q0, kv, s01); s11 = _mm256_fmadd_ps(q1, kv, s11); s21 = _mm256_fmadd_ps(q2, kv, s21);
                            kv = bf16x8(k2 + i);
                            s02 = _mm256_fmadd_ps(q0, kv, s02); s12 = _mm256_fmadd_ps(q1, kv, s12); s22 = _mm256_fmadd_ps(q2, kv, s22);
                            kv = bf16x8(k3 + i);
                            s03 = _mm256_fmadd_ps(q0, kv, s03); s13 = _mm256_fmadd_ps(q1, kv, s13); s23 = _mm256_fmadd_ps(q2, kv, s23);
                        }
                        const __m128 sc = _mm_set1_ps(scale);
                        _mm_storeu_ps(scores + t, _mm_mul_ps(sum4(s00, s01, s02, s03), sc));
                        _mm_storeu_ps(scores + Lp + t, _mm_mul_ps(sum4(s10, s11, s12, s13), sc));
                        _mm_storeu_ps(scores + 2 * Lp + t, _mm_mul_ps(sum4(s20, s21, s22, s23), sc));
                    }
                for (; j < block_size && t < L; j++, t++) {
                    const uint16_t *k = kpool + ((base + j) * kv_heads + kh) * dim;
                    if (group == 3) {
                        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0;
                        for (int64_t i = 0; i < dim; i += 8) {
                            const __m256 kv = bf16x8(k + i);
                            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qb + i), kv, a0);
                            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qb + dim + i), kv, a1);
                            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 2 * dim + i), kv, a2);
                        }
                        scores[t] = hsum(a0) * scale;
                        scores[Lp + t] = hsum(a1) * scale;
                        scores[2 * Lp + t] = hsum(a2) * scale;
                        continue;
                    }
                    __m256 a[MAX_GROUP];
                    for (int64_t h = 0; h < group; h++) a[h] = _mm256_setzero_ps();
                    for (int64_t i = 0; i < dim; i += 8) {
                        __m256 kv = bf16x8(k + i);
                        for (int64_t h = 0; h < group; h++) a[h] = _mm256_fmadd_ps(_mm256_loadu_ps(qb + h * dim + i), kv, a[h]);
                    }
                    for (int64_t h = 0; h < group; h++) scores[h * Lp + t] = hsum(a[h]) * scale;
                }
            }
            float inv[MAX_GROUP];
            for (int64_t h = 0; h < group; h++) {
                float *sh = scores + h * Lp;
                for (int64_t t = L; t < Lp; t++) sh[t] = -__builtin_inff();
                __m256 mv = _mm256_set1_ps(-__builtin_inff());
                for (int64_t t = 0; t < Lp; t += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(sh + t));
                __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
                m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
                m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
                __m256 mx = _mm256_set1_ps(_mm_cvtss_f32(m4)), sum = _mm256_setzero_ps();
                for (int64_t t = 0; t < Lp; t += 8) {
                    __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sh + t), mx));
                    _mm256_storeu_ps(sh + t, e);
                    sum = _mm256_add_ps(sum, e);
                }
                inv[h] = 1.0f / hsum(sum);
                for (int64_t i = 0; i < dim; i++) acc[h * dim + i] = 0.0f;
            }
            if (group == 3 && dim % 32 == 0) { /* SmolLM2's shape: the sums stay in 12 registers */
                for (int64_t i0 = 0; i0 < dim; i0 += 32) {
                    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
                    __m256 c0 = a0, c1 = a0, c2 = a0, c3 = a0;
                    for (int64_t t = 0, blk = 0; t < L; blk++) {
                        const int64_t base = table[blk] * block_size;
                        for (int64_t j = 0; j < block_size && t < L; j++, t++) {
                            const uint16_t *v = vpool + ((base + j) * kv_heads + kh) * dim + i0;
                            const __m256 v0 = bf16x8(v), v1 = bf16x8(v + 8), v2 = bf16x8(v + 16), v3 = bf16x8(v + 24);
                            __m256 p = _mm256_set1_ps(scores[t]);
                            a0 = _mm256_fmadd_ps(p, v0, a0); a1 = _mm256_fmadd_ps(p, v1, a1);
                            a2 = _mm256_fmadd_ps(p, v2, a2); a3 = _mm256_fmadd_ps(p, v3, a3);
                            p = _mm256_set1_ps(scores[Lp + t]);
                            b0 = _mm256_fmadd_ps(p, v0, b0); b1 = _mm256_fmadd_ps(p, v1, b1);
                            b2 = _mm256_fmadd_ps(p, v2, b2); b3 = _mm256_fmadd_ps(p, v3, b3);
                            p = _mm256_set1_ps(scores[2 * Lp + t]);
                            c0 = _mm256_fmadd_ps(p, v0, c0); c1 = _mm256_fmadd_ps(p, v1, c1);
                            c2 = _mm256_fmadd_ps(p, v2, c2); c3 = _mm256_fmadd_ps(p, v3, c3);
                        }
                    }
                    _mm256_storeu_ps(acc + i0, a0); _mm256_storeu_ps(acc + i0 + 8, a1);
                    _mm256_storeu_ps(acc + i0 + 16, a2); _mm256_storeu_ps(acc + i0 + 24, a3);
                    _mm256_storeu_ps(acc + dim + i0, b0); _mm256_storeu_ps(acc + dim + i0 + 8, b1);
                    _mm256_storeu_ps(acc + dim + i0 + 16, b2); _mm256_storeu_ps(acc + dim + i0 + 24, b3);
                    _mm256_storeu_ps(acc + 2 * dim + i0, c0); _mm256_storeu_ps(acc + 2 * dim + i0 + 8, c1);
                    _mm256_storeu_ps(acc + 2 * dim + i0 + 16, c2); _mm256_storeu_ps(acc + 2 * dim + i0 + 24, c3);
                }
            } else {
                for (int64_t t = 0, blk = 0; t < L; blk++) {
                    const int64_t base = table[blk] * block_size;
                    for (int64_t j = 0; j < block_size && t < L; j++, t++) {
                        const uint16_t *v = vpool + ((base + j) * kv_heads + kh) * dim;
                        for (int64_t i = 0; i < dim; i += 8) {
                            __m256 vv = bf16x8(v + i);
                            for (int64_t h = 0; h < group; h++) {
                                float *ah = acc + h * dim + i;
                                _mm256_storeu_ps(ah, _mm256_fmadd_ps(_mm256_set1_ps(scores[h * Lp + t]), vv, _mm256_loadu_ps(ah)));
                            }
                        }
                    }
                }
            }
            float *ob = out + index[b] * heads * dim + kh * group * dim;
            for (int64_t h = 0; h < group; h++)
                for (int64_t i = 0; i < dim; i++) ob[h * dim + i] = acc[h * dim + i] * inv[h];
        }
    }
}

/* ---- a step's decoder layers in one call ---- */

/* What decode_layers reads of one layer, as addresses (ctypes passes them as int64). */
typedef struct {
    const float *attn_norm, *mlp_norm;
    const uint8_t *qkv_q; const float *qkv_d, *qkv_m;
    const uint8_t *o_q; const float *o_d, *o_m;
    const uint8_t *gate_up_q; const float *gate_up_d, *gate_up_m;
    const uint8_t *down_q; const float *down_d, *down_m;
    uint16_t *k, *v;
} LayerBlocks;
const int64_t layer_fields = sizeof(LayerBlocks) / sizeof(void *);

/* The residual stream x [M, hidden] through L layers, for a step whose every row attends alone
 * (index holds each row once): the calls llama.py's _native_layers makes, in its order, on the same
 * buffers, so the result is the same to the bit; one call instead of some 300 from Python.
 * Scratch: h [M, hidden], qkv [M, (heads + 2 kv_heads) dim], attn [M, heads dim], gu [M, 2 inter],
 * act [M, inter]. */
void decode_layers(float *x, int64_t M, const LayerBlocks *layers, int64_t L, int64_t hidden, int64_t heads,
                   int64_t kv_heads, int64_t dim, int64_t inter, float eps, float scale, const int64_t *pos,
                   const float *cos, const float *sin, const int64_t *slots, const int64_t *index,
                   const int64_t *tables, int64_t t_stride, const int64_t *lengths, int64_t block_size,
                   float *h, float *qkv, float *attn, float *gu, float *act) {
    const int64_t q_dim = heads * dim, kv_dim = kv_heads * dim, width = q_dim + 2 * kv_dim;
    for (int64_t i = 0; i < L; i++) {
        const LayerBlocks *w = layers + i;
        rms_norm(x, M, hidden, w->attn_norm, eps, h);
        q4_1_matmul(h, M, hidden, w->qkv_q, w->qkv_d, w->qkv_m, width, qkv, 0);
        rope(qkv, M, width, heads + kv_heads, dim, pos, cos, sin);
        kv_write(qkv, M, width, q_dim, q_dim + kv_dim, kv_dim, slots, w->k, w->v);
        decode_attention(qkv, width, index, M, tables, t_stride, lengths, block_size, w->k, w->v, heads, kv_heads,
                         dim, scale, attn);
        q4_1_matmul(attn, M, q_dim, w->o_q, w->o_d, w->o_m, hidden, x, 1);
        rms_norm(x, M, hidden, w->mlp_norm, eps, h);
        q4_1_matmul(h, M, hidden, w->gate_up_q, w->gate_up_d, w->gate_up_m, 2 * inter, gu, 0);
        silu_mul(gu, M, inter, act);
        q4_1_matmul(act, M, inter, w->down_q, w->down_d, w->down_m, hidden, x, 1);
    }
}
