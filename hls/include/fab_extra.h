// Ops of the Transformers users write: scale by a constant, max pooling, concatenation, reshape.
#ifndef FAB_EXTRA_H
#define FAB_EXTRA_H

#include "fab_common.h"

namespace fab {

// y = requantize(x * scale, x.f + scale_frac, out_t).  Config: in_t, out_t, scaled_t, size, scale,
// out_shift, reuse.
template <class C>
void scale(const typename C::in_t x[C::size], typename C::out_t y[C::size]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II=C::reuse
    for (int i = 0; i < C::size; i++) {
        typename C::scaled_t v = mant(x[i]);
        v *= C::scale;
        y[i] = requant<typename C::out_t, C::out_shift>(v);
    }
}

// Maximum over tokens of [T, D]: y[d] = requantize(max_t x[t, d], x.f, out_t).
// Config: in_t, out_t, tokens, depth, out_shift, reuse.
template <class C>
void global_max_pool(const typename C::in_t x[C::tokens * C::depth], typename C::out_t y[C::depth]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II=C::reuse
    for (int d = 0; d < C::depth; d++) {
        typename fx<typename C::in_t>::mant_t m = mant(x[d]);
        for (int t = 1; t < C::tokens; t++) {
            typename fx<typename C::in_t>::mant_t v = mant(x[t * C::depth + d]);
            if (v > m) m = v;
        }
        y[d] = requant<typename C::out_t, C::out_shift>(m);
    }
}

// Last-axis concatenation of a [R, DA] and b [R, DB]: each part requantized to out_t.
// Config: in_a_t, in_b_t, out_t, rows, da, db, a_shift, b_shift (shifts to out_t's frac).
template <class C>
void concat(const typename C::in_a_t a[C::rows * C::da], const typename C::in_b_t b[C::rows * C::db],
            typename C::out_t y[C::rows * (C::da + C::db)]) {
#pragma HLS INLINE off
    for (int r = 0; r < C::rows; r++) {
#pragma HLS UNROLL
        for (int i = 0; i < C::da; i++) y[r * (C::da + C::db) + i] = requant<typename C::out_t, C::a_shift>(mant(a[r * C::da + i]));
        for (int i = 0; i < C::db; i++) y[r * (C::da + C::db) + C::da + i] = requant<typename C::out_t, C::b_shift>(mant(b[r * C::db + i]));
    }
}

// Reshape: the same mantissas in row-major order (a plain copy).  Config: in_t, out_t, size.
template <class C>
void reshape(const typename C::in_t x[C::size], typename C::out_t y[C::size]) {
#pragma HLS INLINE
    for (int i = 0; i < C::size; i++) {
#pragma HLS UNROLL
        y[i] = from_mant<typename C::out_t>(mant(x[i]));
    }
}

// y = requantize((x << x_shift) + (c << c_shift), F, out_t) with a constant c of x's shape.
// Config: in_t, out_t, const_t (mantissa), sum_t, size, x_shift, c_shift, out_shift, reuse.
template <class C>
void add_const(const typename C::in_t x[C::size], typename C::out_t y[C::size],
               const typename C::const_t c[C::size]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II=C::reuse
    for (int i = 0; i < C::size; i++) {
        typename C::sum_t sx = mant(x[i]);
        typename C::sum_t sc = c[i];
        sx <<= C::x_shift;
        sc <<= C::c_shift;
        typename C::sum_t s = sx + sc;
        y[i] = requant<typename C::out_t, C::out_shift>(s);
    }
}

// Token embedding: y[t, :] = requantize(table[clip(x[t] >> x.f, 0, V-1), :], table.f, out_t).
// Config: in_t, out_t, table_t (mantissa), tokens, vocab, depth, id_shift, out_shift.
template <class C>
void embedding(const typename C::in_t x[C::tokens], typename C::out_t y[C::tokens * C::depth],
               const typename C::table_t table[C::vocab * C::depth]) {
#pragma HLS INLINE off
    for (int t = 0; t < C::tokens; t++) {
        long long id = mant(x[t]).to_int64() >> C::id_shift;
        if (id < 0) id = 0;
        if (id > C::vocab - 1) id = C::vocab - 1;
        for (int d = 0; d < C::depth; d++) {
            y[t * C::depth + d] = requant<typename C::out_t, C::out_shift>(table[id * C::depth + d]);
        }
    }
}

// Attention mask on scores [H, Tq, Tk]: kept entries requantized, the others out_t's minimum.
// Kept: mask[j] != 0 (HAS_MASK) and j <= i (causal).  Config: in_t, out_t, heads, tq, tk, causal, out_shift.
template <class C, bool HAS_MASK, class X>
void mask_fill_rows(const X x[C::heads * C::tq * C::tk], const bool keep_key[C::tk],
                    typename C::out_t y[C::heads * C::tq * C::tk]) {
#pragma HLS INLINE
    typename fx<typename C::out_t>::mant_t lo = 0;
    if (fx<typename C::out_t>::is_signed) {
        lo = 1;
        lo <<= (fx<typename C::out_t>::width - 1);
    }
    for (int h = 0; h < C::heads; h++)
        for (int i = 0; i < C::tq; i++)
            for (int j = 0; j < C::tk; j++) {
                const int k = (h * C::tq + i) * C::tk + j;
                const bool kept = (!HAS_MASK || keep_key[j]) && (!C::causal || j <= i);
                y[k] = kept ? requant<typename C::out_t, C::out_shift>(mant(x[k])) : from_mant<typename C::out_t>(lo);
            }
}

template <class C>
void mask_fill(const typename C::in_a_t x[C::heads * C::tq * C::tk], const typename C::in_b_t mask[C::tk],
               typename C::out_t y[C::heads * C::tq * C::tk]) {
#pragma HLS INLINE off
    bool keep[C::tk];
    for (int j = 0; j < C::tk; j++) keep[j] = mant(mask[j]) != 0;
    mask_fill_rows<C, true, typename C::in_a_t>(x, keep, y);
}

template <class C>
void causal_fill(const typename C::in_t x[C::heads * C::tq * C::tk], typename C::out_t y[C::heads * C::tq * C::tk]) {
#pragma HLS INLINE off
    bool keep[C::tk];
    for (int j = 0; j < C::tk; j++) keep[j] = true;
    mask_fill_rows<C, false, typename C::in_t>(x, keep, y);
}

// Mean over kept tokens: y[d] = requantize(sum_{mask[t] != 0} x[t, d] * recip[count], x.f + scale_frac, out_t).
// Config: in_a_t, in_b_t, out_t, recip_t, sum_t, scaled_t, tokens, depth, out_shift.
template <class C>
void masked_avg_pool(const typename C::in_a_t x[C::tokens * C::depth], const typename C::in_b_t mask[C::tokens],
                     typename C::out_t y[C::depth], const typename C::recip_t recip[C::tokens + 1]) {
#pragma HLS INLINE off
    int count = 0;
    for (int t = 0; t < C::tokens; t++) count += mant(mask[t]) != 0;
    for (int d = 0; d < C::depth; d++) {
        typename C::sum_t s = 0;
        for (int t = 0; t < C::tokens; t++)
            if (mant(mask[t]) != 0) s += mant(x[t * C::depth + d]);
        typename C::scaled_t v = s;
        v *= recip[count];
        y[d] = requant<typename C::out_t, C::out_shift>(v);
    }
}

}  // namespace fab

#endif
