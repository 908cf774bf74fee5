// Dense (fully connected over the last axis) and batched attention MatMul.
#ifndef FAB_DENSE_H
#define FAB_DENSE_H

#include "fab_common.h"

namespace fab {

// Dense: acc[r, n] = sum_k x[r, k] * w[k, n] + (b[n] << bias_shift), exact in acc_t;
// y[r, n] = requantize(acc, x.f + w.f, out_t).  w is [n_in][n_out] row-major.
// Config: in_t, out_t, weight_t, bias_t (mantissa types), acc_t, rows, n_in, n_out,
// bias_shift, out_shift (= x.f + w.f - out.f), reuse (II of the row loop), multipliers.
template <class C>
void dense(const typename C::in_t x[C::rows * C::n_in], typename C::out_t y[C::rows * C::n_out],
           const typename C::weight_t w[C::n_in * C::n_out], const typename C::bias_t b[C::n_out]) {
#pragma HLS INLINE off
#pragma HLS ALLOCATION operation instances=mul limit=C::multipliers
row:
    for (int r = 0; r < C::rows; r++) {
#pragma HLS PIPELINE II=C::reuse
    col:
        for (int n = 0; n < C::n_out; n++) {
            typename C::acc_t acc = b[n];
            acc <<= C::bias_shift;
        dot:
            for (int k = 0; k < C::n_in; k++) {
                acc += mant(x[r * C::n_in + k]) * w[k * C::n_out + n];
            }
            y[r * C::n_out + n] = requant<typename C::out_t, C::out_shift>(acc);
        }
    }
}

// MatMul per head: a [heads][m][k], b [heads][k][n] (or [heads][n][k] when transpose_b);
// acc = sum_k a * b exact in acc_t; y = requantize(acc * scale, a.f + b.f + scale_frac, out_t).
// Config: in_a_t, in_b_t, out_t, acc_t, scaled_t, heads, m, k, n, transpose_b, scale,
// out_shift, reuse, multipliers.
template <class C>
void matmul(const typename C::in_a_t a[C::heads * C::m * C::k], const typename C::in_b_t b[C::heads * C::k * C::n],
            typename C::out_t y[C::heads * C::m * C::n]) {
#pragma HLS INLINE off
#pragma HLS ALLOCATION operation instances=mul limit=C::multipliers
head:
    for (int h = 0; h < C::heads; h++) {
    row:
        for (int i = 0; i < C::m; i++) {
#pragma HLS PIPELINE II=C::reuse
        col:
            for (int j = 0; j < C::n; j++) {
                typename C::acc_t acc = 0;
            dot:
                for (int q = 0; q < C::k; q++) {
                    const int bi = C::transpose_b ? (h * C::n + j) * C::k + q : (h * C::k + q) * C::n + j;
                    acc += mant(a[(h * C::m + i) * C::k + q]) * mant(b[bi]);
                }
                typename C::scaled_t s = acc;
                s *= C::scale;
                y[(h * C::m + i) * C::n + j] = requant<typename C::out_t, C::out_shift>(s);
            }
        }
    }
}

}  // namespace fab

#endif
