/* The edge-frame TFN map (see escn/native/tfn_kernel.py): per edge, every TFN path's (mul_in x mul_out)
 * weight block is read once, in TFN layout, and applied to the few rows (orders m) the path couples.
 *
 * Per edge e the input row x[e] (in_dim values) is first gathered into a buffer in (entry, m, channel) order
 * (xb[k] = x[e, perm_in[k]]), the output is accumulated in a buffer of the same kind and scattered back
 * (y[e, perm_out[k]] = yb[k]). A term t of path p says: the block row-vector at xb[in_off[t] ...
 * in_off[t] + mul_in) times coef[t] times W_p is added to yb[out_off[t] ... out_off[t] + mul_out).
 *
 * path[5 p + 0..4] = weight offset, mul_in, mul_out, first term, one past the last term.
 * Edges [e0, e1) are processed; callers split the edge range between threads.
 * Compiled twice, for float (suffix _f32) and double (suffix _f64). */
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 4096 /* bytes */
#endif
#ifndef PREFETCH_LOCALITY
#define PREFETCH_LOCALITY 3
#endif

#define REAL float
#define SUFFIX _f32
#define VW 16
#include "tfn_frame_map_body.h"
#undef REAL
#undef SUFFIX
#undef VW

#define REAL double
#define SUFFIX _f64
#define VW 8
#include "tfn_frame_map_body.h"
#undef REAL
#undef SUFFIX
#undef VW
