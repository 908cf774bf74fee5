// Element-wise ops: Add, ReLU, table Lookup (GELU, ...), Requantize, GlobalAvgPool, Quantize.
#ifndef FAB_ELEMENTWISE_H
#define FAB_ELEMENTWISE_H

#include "fab_common.h"

namespace fab {

// y = requantize((a << a_shift) + (b << b_shift), max(a.f, b.f), out_t).
// Config: in_a_t, in_b_t, out_t, sum_t, size, a_shift, b_shift, out_shift, reuse.
template <class C>
void add(const typename C::in_a_t a[C::size], const typename C::in_b_t b[C::size], typename C::out_t y[C::size]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II=C::reuse
    for (int i = 0; i < C::size; i++) {
        typename C::sum_t sa = mant(a[i]);
        typename C::sum_t sb = mant(b[i]);
        sa <<= C::a_shift;
        sb <<= C::b_shift;
        typename C::sum_t s = sa + sb;
        y[i] = requant<typename C::out_t, C::out_shift>(s);
    }
}

// y = requantize(max(x, 0), x.f, out_t).  Config: in_t, out_t, size, out_shift, reuse.
template <class C>
void relu(const typename C::in_t x[C::size], typename C::out_t y[C::size]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II=C::reuse
    for (int i = 0; i < C::size; i++) {
        typename fx<typename C::in_t>::mant_t m = mant(x[i]);
        if (m < 0) m = 0;
        y[i] = requant<typename C::out_t, C::out_shift>(m);
    }
}

// y = requantize(x, x.f, out_t).  Config: in_t, out_t, size, out_shift, reuse.
template <class C>
void requantize(const typename C::in_t x[C::size], typename C::out_t y[C::size]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II=C::reuse
    for (int i = 0; i < C::size; i++) {
        y[i] = requant<typename C::out_t, C::out_shift>(mant(x[i]));
    }
}

// y = table[clip((x >> table_shift) - table_offset, 0, table_size - 1)] (x = mantissa).
// Config: in_t, out_t, table_t (mantissa), size, table_shift, table_offset, table_size, reuse.
template <class C>
void lookup(const typename C::in_t x[C::size], typename C::out_t y[C::size],
            const typename C::table_t table[C::table_size]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II=C::reuse
    for (int i = 0; i < C::size; i++) {
        const int idx = table_index<C::table_shift, C::table_offset, C::table_size>(mant(x[i]));
        y[i] = from_mant<typename C::out_t>(table[idx]);
    }
}

// Mean over tokens of [T, D]: y[d] = requantize(sum_t x[t, d] * scale, x.f + scale_frac, out_t).
// Config: in_t, out_t, sum_t, scaled_t, tokens, depth, scale, out_shift, reuse.
template <class C>
void global_avg_pool(const typename C::in_t x[C::tokens * C::depth], typename C::out_t y[C::depth]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II=C::reuse
    for (int d = 0; d < C::depth; d++) {
        typename C::sum_t s = 0;
        for (int t = 0; t < C::tokens; t++) s += mant(x[t * C::depth + d]);
        typename C::scaled_t v = s;
        v *= C::scale;
        y[d] = requant<typename C::out_t, C::out_shift>(v);
    }
}

// Quantize (host side / testbench only, not synthesized): real x -> out_t with out_t's
// rounding (floor, or floor(v + 1/2)) and overflow; equals fabformer.fixed.quantize_float.
template <class T> inline T quantize(double x) {
    double s = ldexp(x, fx<T>::frac);
    if (fx<T>::rnd) s = s + 0.5;
    s = floor(s);
    const double lim = 4611686018427387904.0;  // 2**62
    if (s < -lim) s = -lim;
    if (s > lim) s = lim;
    int_t<64> m = (long long)s;
    return overflow<T>(m);
}

}  // namespace fab

#endif
