// fabformer HLS kernel library: native-integer types for fast C-simulation (g++ only).
//
// Included by fab_common.h when FAB_NATIVE is defined (fabformer's C-simulation build);
// synthesis and the Vitis testbench use the ap_int / ap_fixed definitions instead.  The
// kernels are the same source: here int_t<W> / uint_t<W> hold a mantissa in a native
// integer (long long up to 64 bits, __int128 above: no wider than the type needs) and
// fixed_t / ufixed_t store a mantissa with the type's traits.  Every width comes from
// the IR's exact bit-growth rules, so no value exceeds its type and native arithmetic
// gives the same integers as ap_int; overflow() and requant() apply the type's
// rounding, saturation and wrap explicitly, as the ap versions do.
#ifndef FAB_NATIVE_H
#define FAB_NATIVE_H

#include <cmath>
#include <type_traits>

namespace fab {

// The native integer that holds any value of a W-bit (signed) integer.
template <int W> struct store {
    static_assert(W <= 127, "fab::store: native C-simulation supports widths up to 127 bits");
    typedef typename std::conditional<(W <= 64), long long, __int128>::type type;
};

template <int W, bool S> struct nint {
    typedef typename store<W + (S ? 0 : 1)>::type T;
    static const int width = W;
    T v;
    nint() : v(0) {}
    template <class I> nint(const I &x) : v((T)x) {}
    operator T() const { return v; }
    template <class I> nint &operator+=(const I &x) { v += (T)x; return *this; }
    template <class I> nint &operator-=(const I &x) { v -= (T)x; return *this; }
    template <class I> nint &operator*=(const I &x) { v *= (T)x; return *this; }
    nint &operator<<=(int s) { v <<= s; return *this; }
    nint &operator>>=(int s) { v >>= s; return *this; }
    long long to_int64() const { return (long long)v; }
};

template <int W> using int_t = nint<W, true>;
template <int W> using uint_t = nint<W, false>;

template <int W, int I, ap_q_mode Q, ap_o_mode O, bool S> struct nfixed {
    typedef typename store<W + 1>::type T;
    T v;
};
template <int W, int I, ap_q_mode Q, ap_o_mode O> using fixed_t = nfixed<W, I, Q, O, true>;
template <int W, int I, ap_q_mode Q, ap_o_mode O> using ufixed_t = nfixed<W, I, Q, O, false>;

template <int W, int I, ap_q_mode Q, ap_o_mode O, bool S>
struct fx<nfixed<W, I, Q, O, S> > {
    static const int width = W;
    static const int frac = W - I;
    static const bool is_signed = S;
    static const bool rnd = (Q == AP_RND);
    static const bool sat = (O == AP_SAT);
    typedef nint<W, S> mant_t;
};

template <class C> struct unsigned_of;
template <> struct unsigned_of<long long> { typedef unsigned long long type; };
template <> struct unsigned_of<__int128> { typedef unsigned __int128 type; };

// The native integer type behind a value (an nint, or a plain integer).
template <class V> struct raw { typedef typename V::T type; static const int width = V::width; };
template <> struct raw<long long> { typedef long long type; static const int width = 64; };
template <> struct raw<int> { typedef long long type; static const int width = 32; };

template <class T> inline typename fx<T>::mant_t mant(const T &x) {
    return typename fx<T>::mant_t(x.v);
}

template <class T, class M> inline T from_mant(const M &m) {
    T x;
    x.v = (typename T::T)(typename raw<M>::type)m;
    return x;
}

// Overflow of an exact integer w (already at T's frac) into T: clamp or keep the low bits.
template <class T, class V> inline T overflow(const V &w0) {
    typedef typename raw<V>::type R;
    typedef typename store<(raw<V>::width > fx<T>::width ? raw<V>::width : fx<T>::width) + 2>::type C;
    const int W = fx<T>::width;
    C w = (C)(R)w0;
    T x;
    if (fx<T>::sat) {
        const C hi = fx<T>::is_signed ? (((C)1 << (W - 1)) - 1) : (((C)1 << W) - 1);
        const C lo = fx<T>::is_signed ? -hi - 1 : 0;
        if (w > hi) w = hi;
        if (w < lo) w = lo;
        x.v = (typename T::T)w;
    } else {
        typedef typename unsigned_of<C>::type U;
        const U mask = (((U)1 << (W - 1)) << 1) - 1;  // W low bits (W may equal U's width)
        U u = (U)w & mask;
        C r = (C)u;
        if (fx<T>::is_signed && ((u >> (W - 1)) & 1)) r -= ((C)1 << (W - 1)) << 1;
        x.v = (typename T::T)r;
    }
    return x;
}

// requantize: integer v at frac (T's frac + SHIFT) -> T, with T's rounding then overflow.
template <class T, int SHIFT, class V> inline T requant(const V &v) {
    const int S = SHIFT > 0 ? SHIFT : 0;
    const int L = SHIFT < 0 ? -SHIFT : 0;
    typedef typename store<imax<raw<V>::width + L, S>::value + 2>::type wide_t;
    wide_t w = (wide_t)(typename raw<V>::type)v;
    if (S > 0) {
        if (fx<T>::rnd) w += (wide_t)1 << (S > 0 ? S - 1 : 0);
        w >>= S;
    } else if (L > 0) {
        w <<= L;
    }
    return overflow<T>(nint<imax<raw<V>::width + L, S>::value + 2, true>(w));
}

// requantize with a run-time shift in [-MAXL, MAXR] (softmax, layer norm rows).
template <class T, int MAXL, int MAXR, class V> inline T requant_var(const V &v, int shift) {
    typedef typename store<imax<raw<V>::width + MAXL, MAXR>::value + 2>::type wide_t;
    wide_t w = (wide_t)(typename raw<V>::type)v;
    if (shift > 0) {
        if (fx<T>::rnd) w += (wide_t)1 << (shift - 1);
        w >>= shift;
    } else if (shift < 0) {
        w <<= -shift;
    }
    return overflow<T>(nint<imax<raw<V>::width + MAXL, MAXR>::value + 2, true>(w));
}

// Leading-one position of a positive integer (0 for 0).
template <class V> inline int leading_one(const V &v0) {
    typename raw<V>::type v = v0;
    if (v <= 0) return 0;
    if (sizeof(v) > 8) {
        const unsigned long long hi = (unsigned long long)((unsigned __int128)v >> 64);
        if (hi) return 127 - __builtin_clzll(hi);
    }
    return 63 - __builtin_clzll((unsigned long long)v);
}

// Table index: clip((src >> SHIFT) - OFFSET, 0, SIZE - 1).
template <int SHIFT, long long OFFSET, int SIZE, class V> inline int table_index(const V &src) {
    long long s = (long long)(typename raw<V>::type)src;
    s >>= SHIFT;
    s -= OFFSET;
    if (s < 0) return 0;
    if (s > SIZE - 1) return SIZE - 1;
    return (int)s;
}

}  // namespace fab

#endif
