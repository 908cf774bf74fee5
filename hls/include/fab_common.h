// fabformer HLS kernel library: common helpers.
//
// Tensors are flat arrays of ap_fixed / ap_ufixed values.  Kernels compute on
// the integer mantissas (ap_int / ap_uint) with explicit shifts, exactly as
// fabformer/golden.py does, so C-simulation equals the golden model bit for bit.
#ifndef FAB_COMMON_H
#define FAB_COMMON_H

#include "ap_fixed.h"
#include "ap_int.h"

namespace fab {

template <int A, int B> struct imax { static const int value = A > B ? A : B; };
template <int A> struct iabs { static const int value = A < 0 ? -A : A; };

// Traits of a storage type: width, frac, signedness, rounding and overflow mode.
template <class T> struct fx;

}  // namespace fab

#ifdef FAB_NATIVE
// C-simulation on native integers (fabformer's g++ build defines FAB_NATIVE; synthesis and
// the Vitis testbench never do): the same kernels, on the types of fab_native.h.
#include "fab_native.h"
#else

namespace fab {

// The type names generated code uses: ap_int / ap_uint / ap_fixed / ap_ufixed.
template <int W> using int_t = ap_int<W>;
template <int W> using uint_t = ap_uint<W>;
template <int W, int I, ap_q_mode Q, ap_o_mode O> using fixed_t = ap_fixed<W, I, Q, O>;
template <int W, int I, ap_q_mode Q, ap_o_mode O> using ufixed_t = ap_ufixed<W, I, Q, O>;
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct fx<ap_fixed<W, I, Q, O, N> > {
    static const int width = W;
    static const int frac = W - I;
    static const bool is_signed = true;
    static const bool rnd = (Q == AP_RND);
    static const bool sat = (O == AP_SAT);
    typedef ap_int<W> mant_t;
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct fx<ap_ufixed<W, I, Q, O, N> > {
    static const int width = W;
    static const int frac = W - I;
    static const bool is_signed = false;
    static const bool rnd = (Q == AP_RND);
    static const bool sat = (O == AP_SAT);
    typedef ap_uint<W> mant_t;
};

// The integer mantissa of a fixed-point value (its raw bits, sign-extended).
template <class T> inline typename fx<T>::mant_t mant(const T &x) {
#pragma HLS INLINE
    typename fx<T>::mant_t m;
    m.range(fx<T>::width - 1, 0) = x.range(fx<T>::width - 1, 0);
    return m;
}

// The fixed-point value whose mantissa is m (low bits of m; m must already fit).
template <class T, class M> inline T from_mant(const M &m) {
#pragma HLS INLINE
    typename fx<T>::mant_t v = m;
    T x;
    x.range(fx<T>::width - 1, 0) = v.range(fx<T>::width - 1, 0);
    return x;
}

// Overflow of an exact integer w (already at T's frac) into T: clamp or keep low bits.
template <class T, class V> inline T overflow(const V &w) {
#pragma HLS INLINE
    const int W = fx<T>::width;
    typedef ap_int<imax<V::width, W>::value + 2> cmp_t;
    cmp_t v = w;
    if (fx<T>::sat) {
        cmp_t hi = 1, lo = 0;
        hi <<= (fx<T>::is_signed ? W - 1 : W);
        hi -= 1;
        if (fx<T>::is_signed) lo = -(hi + 1);
        if (v > hi) v = hi;
        if (v < lo) v = lo;
    }
    T x;
    x.range(W - 1, 0) = v.range(W - 1, 0);
    return x;
}

// requantize: integer v at frac (T's frac + SHIFT) -> T, with T's rounding then overflow.
// Equals fabformer.fixed.requantize(v, from_frac, T).
template <class T, int SHIFT, class V> inline T requant(const V &v) {
#pragma HLS INLINE
    const int S = SHIFT > 0 ? SHIFT : 0;
    const int L = SHIFT < 0 ? -SHIFT : 0;
    typedef ap_int<imax<V::width + L, S>::value + 2> wide_t;
    wide_t w = v;
    if (S > 0) {
        if (fx<T>::rnd) {
            wide_t half = 1;
            half <<= (S > 0 ? S - 1 : 0);
            w += half;
        }
        w >>= S;
    } else if (L > 0) {
        w <<= L;
    }
    return overflow<T>(w);
}

// requantize with a run-time shift in [-MAXL, MAXR] (softmax, layer norm rows).
template <class T, int MAXL, int MAXR, class V> inline T requant_var(const V &v, int shift) {
#pragma HLS INLINE
    typedef ap_int<imax<V::width + MAXL, MAXR>::value + 2> wide_t;
    wide_t w = v;
    if (shift > 0) {
        if (fx<T>::rnd) {
            wide_t half = 1;
            half <<= (shift - 1);
            w += half;
        }
        w >>= shift;
    } else if (shift < 0) {
        w <<= -shift;
    }
    return overflow<T>(w);
}

// Leading-one position of a positive integer (0 for 0).
template <class V> inline int leading_one(const V &v) {
#pragma HLS INLINE
    int p = 0;
    for (int i = 0; i < V::width; i++) {
#pragma HLS UNROLL
        if (v[i]) p = i;
    }
    return p;
}

// Table index: clip((src >> SHIFT) - OFFSET, 0, SIZE - 1).
template <int SHIFT, long long OFFSET, int SIZE, class V> inline int table_index(const V &src) {
#pragma HLS INLINE
    long long s = src.to_int64();
    s >>= SHIFT;
    s -= OFFSET;
    if (s < 0) return 0;
    if (s > SIZE - 1) return SIZE - 1;
    return (int)s;
}

}  // namespace fab

#endif  // FAB_NATIVE

#endif
