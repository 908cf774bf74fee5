// Ops without arithmetic: head split / merge, flatten; they move mantissas unchanged.
#ifndef FAB_LAYOUT_H
#define FAB_LAYOUT_H

#include "fab_common.h"

namespace fab {

// [T, H*D] -> [H, T, D]: y[h, t, d] = x[t, h*D + d].  Config: in_t, out_t, heads, tokens, depth.
template <class C>
void split_heads(const typename C::in_t x[C::tokens * C::heads * C::depth],
                 typename C::out_t y[C::heads * C::tokens * C::depth]) {
#pragma HLS INLINE
    for (int h = 0; h < C::heads; h++)
        for (int t = 0; t < C::tokens; t++)
            for (int d = 0; d < C::depth; d++) {
#pragma HLS UNROLL
                y[(h * C::tokens + t) * C::depth + d] =
                    from_mant<typename C::out_t>(mant(x[t * C::heads * C::depth + h * C::depth + d]));
            }
}

// [H, T, D] -> [T, H*D]: y[t, h*D + d] = x[h, t, d].
template <class C>
void merge_heads(const typename C::in_t x[C::heads * C::tokens * C::depth],
                 typename C::out_t y[C::tokens * C::heads * C::depth]) {
#pragma HLS INLINE
    for (int h = 0; h < C::heads; h++)
        for (int t = 0; t < C::tokens; t++)
            for (int d = 0; d < C::depth; d++) {
#pragma HLS UNROLL
                y[t * C::heads * C::depth + h * C::depth + d] =
                    from_mant<typename C::out_t>(mant(x[(h * C::tokens + t) * C::depth + d]));
            }
}

// Row-major flatten (also a plain copy of mantissas).  Config: in_t, out_t, size.
template <class C>
void flatten(const typename C::in_t x[C::size], typename C::out_t y[C::size]) {
#pragma HLS INLINE
    for (int i = 0; i < C::size; i++) {
#pragma HLS UNROLL
        y[i] = from_mant<typename C::out_t>(mant(x[i]));
    }
}

}  // namespace fab

#endif
