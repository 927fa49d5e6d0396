/* Decode attention over the paged bf16 pool: scores, softmax and sums in fp32. Each (sequence, KV
 * head) is one task: the query heads sharing that KV head read each key and value once. SmolLM2's
 * shape (3 query heads per KV head, head dim 64) has its own path, whose sums stay in registers;
 * every other shape takes the general one.
 *
 * A sequence longer than SPLIT_KEYS keys is split instead (flash-decoding): each chunk of its keys,
 * all KV heads, is one task that keeps its heads' maxima, sums and unnormalized values, and the
 * chunks are then combined. One long sequence so keeps every thread busy (a task per KV head gave
 * two threads three tasks), and a chunk reads its blocks' rows whole. Whether a sequence is split
 * depends on its length alone, so its result does not depend on what else is in the step. */
#include <math.h>

#include "kernels.h"
#include "simd.h"

#define SPLIT_KEYS 256 /* a sequence with more keys is split into chunks of about this many */

/* Rows base .. base+n of one KV head in the pool. Attention is latency-bound (each sequence's keys
 * are a fresh read from memory), so the next block's keys and this block's values are prefetched
 * while this block's keys are summed. */
static inline void prefetch_rows(const uint16_t *pool, int64_t base, int64_t n, int64_t kv_heads, int64_t kh, int64_t dim) {
    for (int64_t j = 0; j < n; j++) {
        const char *p = (const char *)(pool + ((base + j) * kv_heads + kh) * dim);
        for (int64_t o = 0; o < dim * 2; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
    }
}

/* What one task reads: its sequence's block table and length, its KV head, the shapes. */
typedef struct {
    const int64_t *table;
    int64_t L, Lp, block_size, kv_heads, kh, dim, group;
    float scale;
    const uint16_t *kpool, *vpool;
} Task;

static inline void prefetch_block(const Task *a, int64_t blk, int64_t t) {
    if (t + a->block_size < a->L) prefetch_rows(a->kpool, a->table[blk + 1] * a->block_size, a->block_size, a->kv_heads, a->kh, a->dim);
    prefetch_rows(a->vpool, a->table[blk] * a->block_size, a->block_size, a->kv_heads, a->kh, a->dim);
}

static inline const uint16_t *row(const Task *a, const uint16_t *pool, int64_t base, int64_t j) {
    return pool + ((base + j) * a->kv_heads + a->kh) * a->dim;
}

/* scores [group, Lp]: the scaled dot products of the group's queries qb with each key. */
static void scores_any(const Task *a, const float *qb, float *scores) {
    const int64_t dim = a->dim, group = a->group, Lp = a->Lp;
    for (int64_t t = 0, blk = 0; t < a->L; blk++) {
        const int64_t base = a->table[blk] * a->block_size;
        prefetch_block(a, blk, t);
        for (int64_t j = 0; j < a->block_size && t < a->L; j++, t++) {
            const uint16_t *k = row(a, a->kpool, base, j);
            __m256 acc[MAX_GROUP];
            for (int64_t h = 0; h < group; h++) acc[h] = _mm256_setzero_ps();
            for (int64_t i = 0; i < dim; i += 8) {
                __m256 kv = bf16x8(k + i);
                for (int64_t h = 0; h < group; h++) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(qb + h * dim + i), kv, acc[h]);
            }
            for (int64_t h = 0; h < group; h++) scores[h * Lp + t] = hsum(acc[h]) * a->scale;
        }
    }
}

/* The scaled scores of 4 keys (k0 and the 3 rows after it, stride apart) for 3 query heads qb,
 * into s0, s1, s2 (a head each): 4 keys x 3 heads of sums in registers, reduced together. */
static inline void scores_4x3(const float *qb, const uint16_t *k0, int64_t stride, int64_t dim, __m128 sc,
                              float *s0, float *s1, float *s2) {
    const uint16_t *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
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
    _mm_storeu_ps(s0, _mm_mul_ps(sum4(s00, s01, s02, s03), sc));
    _mm_storeu_ps(s1, _mm_mul_ps(sum4(s10, s11, s12, s13), sc));
    _mm_storeu_ps(s2, _mm_mul_ps(sum4(s20, s21, s22, s23), sc));
}

/* One key's scaled scores for 3 query heads. */
static inline void scores_1x3(const float *qb, const uint16_t *k, int64_t dim, float scale, float *s0, float *s1, float *s2) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0;
    for (int64_t i = 0; i < dim; i += 8) {
        const __m256 kv = bf16x8(k + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qb + i), kv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qb + dim + i), kv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 2 * dim + i), kv, a2);
    }
    *s0 = hsum(a0) * scale;
    *s1 = hsum(a1) * scale;
    *s2 = hsum(a2) * scale;
}

/* scores_any for 3 query heads, 4 keys at a time. */
static void scores_group3(const Task *a, const float *qb, float *scores) {
    const int64_t dim = a->dim, Lp = a->Lp, stride = a->kv_heads * dim;
    const __m128 sc = _mm_set1_ps(a->scale);
    for (int64_t t = 0, blk = 0; t < a->L; blk++) {
        const int64_t base = a->table[blk] * a->block_size;
        prefetch_block(a, blk, t);
        int64_t j = 0;
        for (; j + 4 <= a->block_size && t + 4 <= a->L; j += 4, t += 4)
            scores_4x3(qb, row(a, a->kpool, base, j), stride, dim, sc, scores + t, scores + Lp + t, scores + 2 * Lp + t);
        for (; j < a->block_size && t < a->L; j++, t++)
            scores_1x3(qb, row(a, a->kpool, base, j), dim, a->scale, scores + t, scores + Lp + t, scores + 2 * Lp + t);
    }
}

/* Each head's scores in place as e^(s - max) (the padding to Lp as 0), with the max in mx and the
 * sum in total. */
static void softmax(const Task *a, float *scores, float *mx, float *total) {
    for (int64_t h = 0; h < a->group; h++) {
        float *sh = scores + h * a->Lp;
        for (int64_t t = a->L; t < a->Lp; t++) sh[t] = -__builtin_inff();
        __m256 mv = _mm256_set1_ps(-__builtin_inff());
        for (int64_t t = 0; t < a->Lp; t += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(sh + t));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        mx[h] = _mm_cvtss_f32(m4);
        __m256 m8 = _mm256_set1_ps(mx[h]), sum = _mm256_setzero_ps();
        for (int64_t t = 0; t < a->Lp; t += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sh + t), m8));
            _mm256_storeu_ps(sh + t, e);
            sum = _mm256_add_ps(sum, e);
        }
        total[h] = hsum(sum);
    }
}

/* acc [group, dim] = the weights in scores times the values. */
static void values_any(const Task *a, const float *scores, float *acc) {
    const int64_t dim = a->dim, group = a->group;
    for (int64_t i = 0; i < group * dim; i++) acc[i] = 0.0f;
    for (int64_t t = 0, blk = 0; t < a->L; blk++) {
        const int64_t base = a->table[blk] * a->block_size;
        for (int64_t j = 0; j < a->block_size && t < a->L; j++, t++) {
            const uint16_t *v = row(a, a->vpool, base, j);
            for (int64_t i = 0; i < dim; i += 8) {
                __m256 vv = bf16x8(v + i);
                for (int64_t h = 0; h < group; h++) {
                    float *ah = acc + h * dim + i;
                    _mm256_storeu_ps(ah, _mm256_fmadd_ps(_mm256_set1_ps(scores[h * a->Lp + t]), vv, _mm256_loadu_ps(ah)));
                }
            }
        }
    }
}

/* o0, o1, o2 [32] += the 32 values of n rows (v and the rows after it, stride apart) weighted by
 * p0, p1, p2 [n] (a head each): the sums in 12 registers, each row's product added in order. */
static inline void values_32x3(const uint16_t *v, int64_t stride, int64_t n, const float *p0, const float *p1,
                               const float *p2, float *o0, float *o1, float *o2) {
    __m256 a0 = _mm256_loadu_ps(o0), a1 = _mm256_loadu_ps(o0 + 8), a2 = _mm256_loadu_ps(o0 + 16);
    __m256 a3 = _mm256_loadu_ps(o0 + 24), b0 = _mm256_loadu_ps(o1), b1 = _mm256_loadu_ps(o1 + 8);
    __m256 b2 = _mm256_loadu_ps(o1 + 16), b3 = _mm256_loadu_ps(o1 + 24), c0 = _mm256_loadu_ps(o2);
    __m256 c1 = _mm256_loadu_ps(o2 + 8), c2 = _mm256_loadu_ps(o2 + 16), c3 = _mm256_loadu_ps(o2 + 24);
    for (int64_t j = 0; j < n; j++, v += stride) {
        const __m256 v0 = bf16x8(v), v1 = bf16x8(v + 8), v2 = bf16x8(v + 16), v3 = bf16x8(v + 24);
        __m256 p = _mm256_set1_ps(p0[j]);
        a0 = _mm256_fmadd_ps(p, v0, a0); a1 = _mm256_fmadd_ps(p, v1, a1);
        a2 = _mm256_fmadd_ps(p, v2, a2); a3 = _mm256_fmadd_ps(p, v3, a3);
        p = _mm256_set1_ps(p1[j]);
        b0 = _mm256_fmadd_ps(p, v0, b0); b1 = _mm256_fmadd_ps(p, v1, b1);
        b2 = _mm256_fmadd_ps(p, v2, b2); b3 = _mm256_fmadd_ps(p, v3, b3);
        p = _mm256_set1_ps(p2[j]);
        c0 = _mm256_fmadd_ps(p, v0, c0); c1 = _mm256_fmadd_ps(p, v1, c1);
        c2 = _mm256_fmadd_ps(p, v2, c2); c3 = _mm256_fmadd_ps(p, v3, c3);
    }
    _mm256_storeu_ps(o0, a0); _mm256_storeu_ps(o0 + 8, a1); _mm256_storeu_ps(o0 + 16, a2); _mm256_storeu_ps(o0 + 24, a3);
    _mm256_storeu_ps(o1, b0); _mm256_storeu_ps(o1 + 8, b1); _mm256_storeu_ps(o1 + 16, b2); _mm256_storeu_ps(o1 + 24, b3);
    _mm256_storeu_ps(o2, c0); _mm256_storeu_ps(o2 + 8, c1); _mm256_storeu_ps(o2 + 16, c2); _mm256_storeu_ps(o2 + 24, c3);
}

/* values_any for 3 query heads and dim % 32 == 0, block by block. */
static void values_group3(const Task *a, const float *scores, float *acc) {
    const int64_t dim = a->dim, Lp = a->Lp, stride = a->kv_heads * dim;
    for (int64_t i = 0; i < 3 * dim; i++) acc[i] = 0.0f;
    for (int64_t t = 0, blk = 0; t < a->L; blk++) {
        const int64_t base = a->table[blk] * a->block_size, n = a->L - t < a->block_size ? a->L - t : a->block_size;
        for (int64_t i0 = 0; i0 < dim; i0 += 32)
            values_32x3(row(a, a->vpool, base, 0) + i0, stride, n, scores + t, scores + Lp + t, scores + 2 * Lp + t,
                        acc + i0, acc + dim + i0, acc + 2 * dim + i0);
        t += n;
    }
}

/* A whole block's rows, every KV head (contiguous in the pool), towards L1. */
static inline void prefetch_whole(const uint16_t *pool, const Task *a, int64_t blk) {
    const char *p = (const char *)(pool + a->table[blk] * a->block_size * a->kv_heads * a->dim);
    for (int64_t o = 0, bytes = a->block_size * a->kv_heads * a->dim * 2; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* The walk of scores_rows3 and values_rows3 over a sequence's blocks in pool, in order: block
 * blk's rows (every KV head), which begin at key t, with the block after next prefetched; *n: how
 * many of its rows hold keys. walk_start prefetches the first two. */
static inline void walk_start(const uint16_t *pool, const Task *a) {
    for (int64_t blk = 0; blk < 2 && blk * a->block_size < a->L; blk++) prefetch_whole(pool, a, blk);
}

static inline const uint16_t *walk_block(const uint16_t *pool, const Task *a, int64_t blk, int64_t t, int64_t *n) {
    if (t + 2 * a->block_size < a->L) prefetch_whole(pool, a, blk + 2);
    *n = a->L - t < a->block_size ? a->L - t : a->block_size;
    return pool + a->table[blk] * a->block_size * a->kv_heads * a->dim;
}

/* scores [heads, Lp] of every query head (q [heads, dim]) for 3 query heads per KV head, block by
 * block, each block's KV heads in turn: a block's rows are read whole and in order (the next
 * block's keys and this block's values prefetched), where a pass per KV head would read a third of
 * each row, far apart. Each score is summed as scores_group3 sums it. */
static void scores_rows3(const Task *a, const float *q, float *scores) {
    const int64_t dim = a->dim, Lp = a->Lp, stride = a->kv_heads * dim;
    const __m128 sc = _mm_set1_ps(a->scale);
    walk_start(a->kpool, a);
    for (int64_t t = 0, blk = 0, n; t < a->L; blk++, t += n) {
        const uint16_t *base = walk_block(a->kpool, a, blk, t, &n);
        for (int64_t kh = 0; kh < a->kv_heads; kh++) {
            const float *qb = q + kh * 3 * dim;
            float *s0 = scores + kh * 3 * Lp + t, *s1 = s0 + Lp, *s2 = s1 + Lp;
            const uint16_t *k = base + kh * dim;
            int64_t j = 0;
            for (; j + 4 <= n; j += 4) scores_4x3(qb, k + j * stride, stride, dim, sc, s0 + j, s1 + j, s2 + j);
            for (; j < n; j++) scores_1x3(qb, k + j * stride, dim, a->scale, s0 + j, s1 + j, s2 + j);
        }
    }
}

/* acc [heads, dim] += the weights in scores [heads, Lp] times the values, block by block as
 * scores_rows3 reads keys; per block, each KV head's 32 columns at a time in 12 registers. */
static void values_rows3(const Task *a, const float *scores, float *acc) {
    const int64_t dim = a->dim, Lp = a->Lp, stride = a->kv_heads * dim;
    for (int64_t i = 0; i < a->kv_heads * 3 * dim; i++) acc[i] = 0.0f;
    walk_start(a->vpool, a);
    for (int64_t t = 0, blk = 0, n; t < a->L; blk++, t += n) {
        const uint16_t *base = walk_block(a->vpool, a, blk, t, &n);
        for (int64_t kh = 0; kh < a->kv_heads; kh++) {
            const float *p0 = scores + kh * 3 * Lp + t;
            for (int64_t i0 = 0; i0 < dim; i0 += 32)
                values_32x3(base + kh * dim + i0, stride, n, p0, p0 + Lp, p0 + 2 * Lp, acc + kh * 3 * dim + i0,
                            acc + (kh * 3 + 1) * dim + i0, acc + (kh * 3 + 2) * dim + i0);
        }
    }
}

static inline int64_t padded_length(int64_t L) { return (L + 7) & ~(int64_t)7; }

/* A task's scratch: its scores [group, Lp] and its sums [group, dim]. */
static inline int64_t task_work(int64_t L, int64_t group, int64_t dim) { return padded_length(L) * group + group * dim; }

/* Keys per chunk of a split sequence: SPLIT_KEYS rounded up to whole blocks, so that a chunk starts
 * at an entry of the block table and ceil(L / SPLIT_KEYS) bounds a sequence's chunks. */
static inline int64_t chunk_keys(int64_t block_size) { return (SPLIT_KEYS + block_size - 1) / block_size * block_size; }

static inline int64_t chunks_bound(int64_t L) { return L > SPLIT_KEYS ? (L + SPLIT_KEYS - 1) / SPLIT_KEYS : 0; }

/* The longest sequence, and the most chunks a split one may have. */
static void extents(const int64_t *lengths, int64_t B, int64_t *longest, int64_t *chunks) {
    *longest = *chunks = 0;
    for (int64_t b = 0; b < B; b++) {
        *longest = lengths[b] > *longest ? lengths[b] : *longest;
        *chunks = chunks_bound(lengths[b]) > *chunks ? chunks_bound(lengths[b]) : *chunks;
    }
}

/* A thread's scratch: a head task's, or a chunk task's (every head's scores of up to 2 SPLIT_KEYS
 * keys: a chunk is SPLIT_KEYS rounded up to whole blocks, which are never longer than SPLIT_KEYS
 * where sequences are split). */
static inline int64_t slice_work(int64_t longest, int64_t chunks, int64_t heads, int64_t kv_heads, int64_t dim) {
    const int64_t head = task_work(longest, heads / kv_heads, dim);
    const int64_t chunk = chunks ? task_work(longest < 2 * SPLIT_KEYS ? longest : 2 * SPLIT_KEYS, heads, dim) : 0;
    return head > chunk ? head : chunk;
}

/* Each thread's task scratch, then the split sequences' partial results: [B, chunks, heads] of
 * (max, sum, dim unnormalized values). */
int64_t attention_work(const int64_t *lengths, int64_t B, int64_t heads, int64_t kv_heads, int64_t dim) {
    int64_t longest, chunks;
    extents(lengths, B, &longest, &chunks);
    return threads() * slice_work(longest, chunks, heads, kv_heads, dim) + B * chunks * heads * (dim + 2);
}

/* Sequence b's query heads qb over its keys, one KV head a task (unsplit sequences). */
static void head_task(const Task *a, const float *qb, float *scores, float *ob, int group3) {
    float *acc = scores + a->Lp * a->group, mx[MAX_GROUP], total[MAX_GROUP];
    if (group3) scores_group3(a, qb, scores);
    else scores_any(a, qb, scores);
    softmax(a, scores, mx, total);
    if (group3) values_group3(a, scores, acc);
    else values_any(a, scores, acc);
    for (int64_t h = 0; h < a->group; h++) {
        const float inv = 1.0f / total[h];
        for (int64_t i = 0; i < a->dim; i++) ob[h * a->dim + i] = acc[h * a->dim + i] * inv;
    }
}

/* Keys t0 .. t0 + chunk of a split sequence, every KV head, into part [heads] of (max, sum, values). */
static void chunk_task(const Task *whole, int64_t t0, int64_t chunk, const float *qb, float *scores, float *part,
                       int group3) {
    const int64_t group = whole->group, dim = whole->dim;
    Task a = *whole;
    a.table = whole->table + t0 / whole->block_size;
    a.L = whole->L - t0 < chunk ? whole->L - t0 : chunk;
    a.Lp = padded_length(a.L);
    float mx[MAX_GROUP], total[MAX_GROUP];
    if (group3) {  /* every KV head at once, block by block */
        const int64_t heads = whole->kv_heads * 3;
        float *acc = scores + a.Lp * heads;
        scores_rows3(&a, qb, scores);
        a.group = 3;
        for (a.kh = 0; a.kh < whole->kv_heads; a.kh++) {
            softmax(&a, scores + a.kh * 3 * a.Lp, mx, total);
            for (int64_t h = 0; h < 3; h++) {
                part[(a.kh * 3 + h) * (dim + 2)] = mx[h];
                part[(a.kh * 3 + h) * (dim + 2) + 1] = total[h];
            }
        }
        values_rows3(&a, scores, acc);
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < dim; i++) part[h * (dim + 2) + 2 + i] = acc[h * dim + i];
        return;
    }
    float *acc = scores + a.Lp * group;
    for (a.kh = 0; a.kh < whole->kv_heads; a.kh++) {
        const float *qk = qb + a.kh * group * dim;
        scores_any(&a, qk, scores);
        softmax(&a, scores, mx, total);
        values_any(&a, scores, acc);
        for (int64_t h = 0; h < group; h++) {
            float *ph = part + (a.kh * group + h) * (dim + 2);
            ph[0] = mx[h];
            ph[1] = total[h];
            for (int64_t i = 0; i < dim; i++) ph[2 + i] = acc[h * dim + i];
        }
    }
}

/* One head of a split sequence from its chunks' partial results (``stride`` floats apart). */
static void combine(const float *part, int64_t chunks, int64_t stride, int64_t dim, float *ob) {
    float m = -__builtin_inff(), total = 0.0f;
    for (int64_t c = 0; c < chunks; c++) m = part[c * stride] > m ? part[c * stride] : m;
    for (int64_t i = 0; i < dim; i++) ob[i] = 0.0f;
    for (int64_t c = 0; c < chunks; c++) {
        const float *pc = part + c * stride, w = expf(pc[0] - m);
        total += pc[1] * w;
        for (int64_t i = 0; i < dim; i++) ob[i] += pc[2 + i] * w;
    }
    const float inv = 1.0f / total;
    for (int64_t i = 0; i < dim; i++) ob[i] *= inv;
}

int64_t decode_attention(const float *q, int64_t q_stride, const int64_t *index, int64_t B,
                         const int64_t *tables, int64_t t_stride, const int64_t *lengths, int64_t block_size,
                         const uint16_t *kpool, const uint16_t *vpool, int64_t heads, int64_t kv_heads, int64_t dim,
                         float scale, float *out, float *work, int64_t work_floats) {
    const int64_t need = attention_work(lengths, B, heads, kv_heads, dim);
    if (work_floats < need) return need;
    int64_t longest, most;
    extents(lengths, B, &longest, &most);
    const int64_t group = heads / kv_heads, slice = slice_work(longest, most, heads, kv_heads, dim);
    const int64_t chunk = chunk_keys(block_size);
    const int64_t part_stride = heads * (dim + 2);  /* one chunk's heads */
    float *parts = work + threads() * slice;
    const int group3 = group == 3 && dim % 32 == 0;
    #pragma omp parallel if (B * kv_heads > 2 || most > 0)
    {
        float *scores = work + omp_get_thread_num() * slice;
        #pragma omp for collapse(2) schedule(dynamic, 1) nowait
        for (int64_t b = 0; b < B; b++) {
            for (int64_t kh = 0; kh < kv_heads; kh++) {
                if (lengths[b] > SPLIT_KEYS && block_size <= SPLIT_KEYS) continue;
                const Task a = {tables + b * t_stride, lengths[b], padded_length(lengths[b]), block_size, kv_heads, kh, dim,
                                group, scale, kpool, vpool};
                head_task(&a, q + index[b] * q_stride + kh * group * dim, scores, out + index[b] * heads * dim + kh * group * dim,
                          group3);
            }
        }
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t b = 0; b < B; b++) {
            for (int64_t c = 0; c < most; c++) {
                if (lengths[b] <= SPLIT_KEYS || block_size > SPLIT_KEYS || c * chunk >= lengths[b]) continue;
                const Task whole = {tables + b * t_stride, lengths[b], 0, block_size, kv_heads, 0, dim, group, scale, kpool, vpool};
                chunk_task(&whole, c * chunk, chunk, q + index[b] * q_stride, scores, parts + (b * most + c) * part_stride, group3);
            }
        }
        #pragma omp for collapse(2) schedule(static)
        for (int64_t b = 0; b < B; b++) {
            for (int64_t h = 0; h < heads; h++) {
                if (lengths[b] <= SPLIT_KEYS || block_size > SPLIT_KEYS) continue;
                combine(parts + b * most * part_stride + h * (dim + 2), (lengths[b] + chunk - 1) / chunk, part_stride, dim,
                        out + index[b] * heads * dim + h * dim);
            }
        }
    }
    return 0;
}
