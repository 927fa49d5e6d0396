/* A step's decoder layers in one call, for a step whose every row attends alone (decoding, short
 * prompt chunks): the same kernels llama.py's layer loop calls, in its order, on the same buffers,
 * so the result is the same to the bit, without a return to Python between them. */
#include "kernels.h"

static inline int64_t max2(int64_t a, int64_t b) { return a > b ? a : b; }

/* Activations h [M, hidden], qkv [M, (heads + 2 kv_heads) dim], attn [M, heads dim],
 * gu [M, 2 inter], act [M, inter], then the largest work of the products and attention. */
int64_t decode_layers_work(int64_t M, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t dim, int64_t inter,
                           const int64_t *lengths) {
    const int64_t q_dim = heads * dim, width = q_dim + 2 * kv_heads * dim;
    const int64_t products = max2(matmul_work(M, hidden), max2(matmul_work(M, q_dim), matmul_work(M, inter)));
    return M * (hidden + width + q_dim + 3 * inter) + max2(products, attention_work(lengths, M, heads, kv_heads, dim));
}

int64_t decode_layers(float *x, int64_t M, const LayerBlocks *layers, int64_t L, int64_t hidden, int64_t heads,
                      int64_t kv_heads, int64_t dim, int64_t inter, float eps, float scale, const int64_t *pos,
                      const float *cos, const float *sin, const int64_t *slots, const int64_t *index,
                      const int64_t *tables, int64_t t_stride, const int64_t *lengths, int64_t block_size,
                      int bf16, float *work, int64_t work_floats) {
    const int64_t need = decode_layers_work(M, hidden, heads, kv_heads, dim, inter, lengths);
    if (work_floats < need) return need;
    const int64_t q_dim = heads * dim, kv_dim = kv_heads * dim, width = q_dim + 2 * kv_dim;
    float *h = work, *qkv = h + M * hidden, *attn = qkv + M * width, *gu = attn + M * q_dim, *act = gu + M * 2 * inter;
    float *rest = act + M * inter;
    const int64_t rest_floats = work_floats - (rest - work);
    for (int64_t i = 0; i < L; i++) {
        const LayerBlocks *w = layers + i;
        rms_norm(x, M, hidden, w->attn_norm, eps, h);
        q4_1_matmul(h, M, hidden, w->qkv_q, w->qkv_d, w->qkv_m, width, qkv, 0, bf16, rest, rest_floats);
        rope(qkv, M, width, heads + kv_heads, dim, pos, cos, sin);
        kv_write(qkv, M, width, q_dim, q_dim + kv_dim, kv_dim, slots, w->k, w->v);
        decode_attention(qkv, width, index, M, tables, t_stride, lengths, block_size, w->k, w->v, heads, kv_heads,
                         dim, scale, attn, rest, rest_floats);
        q4_1_matmul(attn, M, q_dim, w->o_q, w->o_d, w->o_m, hidden, x, 1, bf16, rest, rest_floats);
        rms_norm(x, M, hidden, w->mlp_norm, eps, h);
        q4_1_matmul(h, M, hidden, w->gate_up_q, w->gate_up_d, w->gate_up_m, 2 * inter, gu, 0, bf16, rest, rest_floats);
        silu_mul(gu, M, inter, act);
        q4_1_matmul(act, M, inter, w->down_q, w->down_d, w->down_m, hidden, x, 1, bf16, rest, rest_floats);
    }
    return 0;
}
