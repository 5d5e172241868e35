/* escn's compiled kernels (see escn/native/build.py), one translation unit: each kernel body is instantiated
 * for float (suffix _f32, 16 lanes per 64-byte vector) and double (suffix _f64, 8 lanes).
 *   tfn_frame_map.h  the edge-frame map of TFN-layout per-edge weights (escn/native/tfn_kernel.py)
 *   edge_rotation.h  the rotation into and out of the edge frame (escn/native/rotation_kernel.py)
 *   silu.h           SiLU and its first and second derivatives, elementwise (escn/native/silu_kernel.py)
 *   s2_grid.h        the S2 activation's grid pass, fused per edge (escn/native/s2_grid_kernel.py)
 * Every exported kernel takes an edge range [e0, e1) (silu.h: a range of elements) and, last, a thread count (see escn_openmp). */
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_COUNT() ((int64_t)omp_get_num_threads())
#define THREAD_INDEX() ((int64_t)omp_get_thread_num())
#else
#define THREAD_COUNT() ((int64_t)1)
#define THREAD_INDEX() ((int64_t)0)
#endif

/* The body of every exported kernel: RANGE_CALL, an expression over the edges [r0, r1), run once per thread of
 * an OpenMP team of `nthreads`, each thread on its contiguous share of [e0, e1) (without OpenMP: once, over all
 * of it); the kernel returns the OR of the calls' results. */
#define SPLIT_OVER_THREADS(RANGE_CALL)                                                                             \
    int rc = 0;                                                                                                    \
    (void)nthreads;                                                                                                \
    _Pragma("omp parallel num_threads(nthreads) reduction(| : rc)")                                                \
    {                                                                                                              \
        const int64_t k_ = THREAD_COUNT(), i_ = THREAD_INDEX(), n_ = e1 - e0;                                      \
        const int64_t r0 = e0 + n_ * i_ / k_, r1 = e0 + n_ * (i_ + 1) / k_;                                        \
        rc |= RANGE_CALL;                                                                                          \
    }                                                                                                              \
    return rc;

/* 1 when built with OpenMP: each kernel then splits its edge range over `nthreads` threads of the OpenMP
 * runtime PyTorch has loaded (same soname, so the same thread pool: no second set of threads spinning against
 * PyTorch's). Without it a kernel runs its range on the calling thread and the caller splits the edges. */
int escn_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#if defined(__AVX512F__)
/* In-place transpose of 16 x 16 floats held as 16 row vectors (64 shuffles, no memory round trip). Stages 1
 * and 2 interleave 32- and 64-bit elements within 128-bit lanes, so that u[4 k + c] holds, in lane L, rows
 * 4 k ... 4 k + 3 of column 4 L + c; stages 3 and 4 move the lanes into place. */
static inline void transpose16x16_ps(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int k = 0; k < 8; ++k) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; ++k) {
        const __m512d t0 = _mm512_castps_pd(t[4 * k]), t1 = _mm512_castps_pd(t[4 * k + 1]);
        const __m512d t2 = _mm512_castps_pd(t[4 * k + 2]), t3 = _mm512_castps_pd(t[4 * k + 3]);
        u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int c = 0; c < 4; ++c) {
        const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        const __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        const __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
}
#endif

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
#include "tfn_frame_map.h"
#include "edge_rotation.h"
#include "silu.h"
#include "s2_grid.h"
#undef REAL
#undef SUFFIX
#undef VW

#define REAL double
#define SUFFIX _f64
#define VW 8
#include "tfn_frame_map.h"
#include "edge_rotation.h"
#include "silu.h"
#include "s2_grid.h"
#undef REAL
#undef SUFFIX
#undef VW
