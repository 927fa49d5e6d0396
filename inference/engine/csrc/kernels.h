/* The block kernels' interface: fp32 activations, the GGUF's Q4_1 / Q8_0 weight blocks as stored,
 * a bf16 paged KV pool. AVX2 + FMA, OpenMP; the panels also in AVX512-BF16, and the row tiles in
 * AVX-512VL's 32 registers, where the CPU has them.
 *
 * This file is the one statement of the interface: every .c file here includes it, so the compiler
 * checks each definition against it, and kernels_build.py hands its declarations to cffi, so every
 * call from Python is checked against it too (argument count and pointer types).
 *
 * Memory a kernel needs beyond its outputs is passed in by the caller as `work` (fp32, `work_floats`
 * long), sized by the matching *_work function; a kernel given less does nothing and returns the
 * size it needs, so a wrong size is an error at the call, not a write past the end. The kernels
 * return 0 otherwise. Shapes: K and hidden sizes multiples of 32, head dims multiples of 8, at
 * most MAX_GROUP query heads per KV head; the caller checks them (kernels.py). */
#ifndef SMOLLM_KERNELS_H
#define SMOLLM_KERNELS_H
#include <stdint.h>

#define MAX_GROUP 8
/* Steps of fewer rows sum each row as a one-row product does; from here on, panels. */
#define PANEL_ROWS 12

/* A block's scale as the GGUF stores it, fp16 (widened exactly when read). A type of its own, so that
 * cffi refuses any other 16-bit tensor (the bf16 KV pool, say) in its place. */
typedef struct { uint16_t bits; } f16;

/* One layer's weights and KV pool rows, as decode_layers reads them. */
typedef struct {
    const float *attn_norm, *mlp_norm;
    const uint8_t *qkv_q; const f16 *qkv_d, *qkv_m;
    const uint8_t *o_q; const f16 *o_d, *o_m;
    const uint8_t *gate_up_q; const f16 *gate_up_d, *gate_up_m;
    const uint8_t *down_q; const f16 *down_d, *down_m;
    uint16_t *k, *v;
} LayerBlocks;

/* ---- the OpenMP runtime (threads.c) ---- */
/* Frees the calling thread's team of OpenMP threads (the next parallel region it runs makes a new
 * one); 0 when done. */
int release_threads(void);

/* ---- block products (blocks.c): y[M, N] (+)= x[M, K] . W[N, K]^T ---- */
int64_t matmul_work(int64_t M, int64_t K);
/* Whether this CPU has AVX512-BF16 (and VL, BW): where it lacks them, bf16 = 1 below is ignored. */
int bf16_panels_supported(void);
/* Whether steps below PANEL_ROWS rows sum up to 8 rows a tile in AVX-512VL's 32 registers (where the
 * CPU has AVX-512VL: the default) or 4 in AVX2's 16: the same instructions in the same order, so the
 * same results to the bit. on: 1 wide where the CPU allows, 0 not, -1 leave as is; returns the setting
 * in force. Not thread-safe to change: the tests compare the two. */
int wide_row_tiles(int on);
/* qs [N, K/2] (16 bytes per block, llama.cpp's nibble order), d and m [N, K/32]; add: y += x . W^T;
 * bf16: steps of PANEL_ROWS rows or more multiply in bf16 (blocks.c), fewer rows are unaffected. */
int64_t q4_1_matmul(const float *x, int64_t M, int64_t K, const uint8_t *qs, const f16 *d, const f16 *m,
                    int64_t N, float *y, int add, int bf16, float *work, int64_t work_floats);
/* qs [N, K] int8, d [N, K/32]. */
int64_t q8_0_matmul(const float *x, int64_t M, int64_t K, const int8_t *qs, const f16 *d, int64_t N, float *y,
                    int add, int bf16, float *work, int64_t work_floats);

/* ---- the rest of a layer (layer_ops.c) ---- */
/* y = x / sqrt(mean(x^2) + eps) * w, per row of K. */
void rms_norm(const float *x, int64_t M, int64_t K, const float *w, float eps, float *y);
/* In place on the first `heads` heads of each row (row stride `stride`): x * cos + rotate_half(x) * sin,
 * with cos and sin rows [max_pos, dim] taken at each row's position. */
void rope(float *x, int64_t M, int64_t stride, int64_t heads, int64_t dim, const int64_t *pos,
          const float *cos, const float *sin);
/* Row r's `width` floats at x + r * stride + k_off (keys) and + v_off (values) go, as bf16, to pool
 * rows slots[r] (each `width` wide). */
void kv_write(const float *x, int64_t M, int64_t stride, int64_t k_off, int64_t v_off, int64_t width,
              const int64_t *slots, uint16_t *kpool, uint16_t *vpool);
/* y[r, :I] = silu(x[r, :I]) * x[r, I:2I]. */
void silu_mul(const float *x, int64_t M, int64_t I, float *y);

/* ---- decode attention over the paged pool (attention.c) ---- */
int64_t attention_work(const int64_t *lengths, int64_t B, int64_t heads, int64_t kv_heads, int64_t dim);
/* Sequence b's one query (row index[b] of q, row stride q_stride, `heads` heads of `dim`) attends to
 * its first lengths[b] keys, found through its block table tables[b] (row stride t_stride); the heads
 * sharing a KV head read each key and value once. out rows as q rows, heads * dim wide. */
int64_t decode_attention(const float *q, int64_t q_stride, const int64_t *index, int64_t B,
                         const int64_t *tables, int64_t t_stride, const int64_t *lengths, int64_t block_size,
                         const uint16_t *kpool, const uint16_t *vpool, int64_t heads, int64_t kv_heads, int64_t dim,
                         float scale, float *out, float *work, int64_t work_floats);

/* ---- a step's layers in one call (decode_layers.c) ---- */
int64_t decode_layers_work(int64_t M, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t dim, int64_t inter,
                           const int64_t *lengths);
/* The residual stream x [M, hidden] through L layers in place, for a step whose every row attends
 * alone (index holds each row once): the calls of the layer loop in llama.py, in its order. */
int64_t decode_layers(float *x, int64_t M, const LayerBlocks *layers, int64_t L, int64_t hidden, int64_t heads,
                      int64_t kv_heads, int64_t dim, int64_t inter, float eps, float scale, const int64_t *pos,
                      const float *cos, const float *sin, const int64_t *slots, const int64_t *index,
                      const int64_t *tables, int64_t t_stride, const int64_t *lengths, int64_t block_size,
                      int bf16, float *work, int64_t work_floats);

#endif
