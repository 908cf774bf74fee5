// Softmax and LayerNorm: row reductions with a per-row variable shift.
#ifndef FAB_NORMALIZE_H
#define FAB_NORMALIZE_H

#include "fab_common.h"

namespace fab {

// Softmax over rows of length len (see fabformer.ir.Softmax):
// d = max - x; e = exp_table[d]; s = sum e; p = leading one of s;
// n = s >> (p - R) (or <<); r = recip_table[n]; y = requantize(e * r, Fr + p, out_t).
// Config: in_t, out_t, diff_t, exp_t, sum_t, recip_t, prod_t, rows, len, recip_bits,
// exp_shift, exp_offset, exp_size, recip_shift, recip_offset, recip_size, recip_frac,
// max_left, max_right, reuse.
template <class C>
void softmax(const typename C::in_t x[C::rows * C::len], typename C::out_t y[C::rows * C::len],
             const typename C::exp_t exp_table[C::exp_size], const typename C::recip_t recip_table[C::recip_size]) {
#pragma HLS INLINE off
row:
    for (int r = 0; r < C::rows; r++) {
#pragma HLS PIPELINE II=C::reuse
        typename fx<typename C::in_t>::mant_t mx = mant(x[r * C::len]);
        for (int i = 1; i < C::len; i++) {
            typename fx<typename C::in_t>::mant_t v = mant(x[r * C::len + i]);
            if (v > mx) mx = v;
        }
        typename C::exp_t e[C::len];
#pragma HLS ARRAY_PARTITION variable=e complete
        typename C::sum_t s = 0;
        for (int i = 0; i < C::len; i++) {
            typename C::diff_t d = mx;
            d -= mant(x[r * C::len + i]);
            e[i] = exp_table[table_index<C::exp_shift, C::exp_offset, C::exp_size>(d)];
            s += e[i];
        }
        const int p = leading_one(s);
        typename C::sum_t n = s;
        if (p >= C::recip_bits) n >>= (p - C::recip_bits);
        else n <<= (C::recip_bits - p);
        const typename C::recip_t rc = recip_table[table_index<C::recip_shift, C::recip_offset, C::recip_size>(n)];
        const int shift = C::recip_frac + p - fx<typename C::out_t>::frac;
        for (int i = 0; i < C::len; i++) {
            typename C::prod_t pr = e[i];
            pr *= rc;
            y[r * C::len + i] = requant_var<typename C::out_t, C::max_left, C::max_right>(pr, shift);
        }
    }
}

// LayerNorm over rows of n features (see fabformer.ir.LayerNorm):
// S = sum x; d = n*x - S; q = sum d*d + eps; sh = (leading one of q) - R, floored to even;
// t = invsqrt_table[q >> sh]; z = requantize(d * t, Ft + (R + sh)/2, norm_t);
// y = requantize(z * gamma + (beta << beta_shift), norm.f + gamma.f, out_t).
// Config: in_t, out_t, norm_t, sum_t, d_t, q_t, table_t, dt_t, gamma_t, beta_t, y_t, rows, n,
// eps, invsqrt_bits, table_shift, table_offset, table_size, table_frac, beta_shift, out_shift,
// max_left, max_right, reuse.
template <class C>
void layernorm(const typename C::in_t x[C::rows * C::n], typename C::out_t y[C::rows * C::n],
               const typename C::gamma_t gamma[C::n], const typename C::beta_t beta[C::n],
               const typename C::table_t table[C::table_size]) {
#pragma HLS INLINE off
row:
    for (int r = 0; r < C::rows; r++) {
#pragma HLS PIPELINE II=C::reuse
        typename C::sum_t S = 0;
        for (int i = 0; i < C::n; i++) S += mant(x[r * C::n + i]);
        typename C::d_t d[C::n];
#pragma HLS ARRAY_PARTITION variable=d complete
        typename C::q_t q = C::eps;
        for (int i = 0; i < C::n; i++) {
            int_t<C::d_t::width + 1> v = mant(x[r * C::n + i]);
            v *= C::n;
            v -= S;
            d[i] = v;
            q += d[i] * d[i];
        }
        int sh = leading_one(q) - C::invsqrt_bits;
        sh = sh & ~1;  // floor to an even number
        typename C::q_t nq = q;
        if (sh >= 0) nq >>= sh;
        else nq <<= -sh;
        const typename C::table_t t = table[table_index<C::table_shift, C::table_offset, C::table_size>(nq)];
        const int shift = C::table_frac + (C::invsqrt_bits + sh) / 2 - fx<typename C::norm_t>::frac;
        for (int i = 0; i < C::n; i++) {
            typename C::dt_t dt = d[i];
            dt *= t;
            typename C::norm_t z = requant_var<typename C::norm_t, C::max_left, C::max_right>(dt, shift);
            typename C::y_t v = mant(z);
            v *= gamma[i];
            typename C::y_t bb = beta[i];
            bb <<= C::beta_shift;
            v += bb;
            y[r * C::n + i] = requant<typename C::out_t, C::out_shift>(v);
        }
    }
}

}  // namespace fab

#endif
