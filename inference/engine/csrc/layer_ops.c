/* The rest of a layer for native steps: fp32 activations, bf16 KV pool. */
#include "kernels.h"
#include "simd.h"

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
