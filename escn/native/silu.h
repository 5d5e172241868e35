/* SiLU and its first and second derivatives, elementwise over flat arrays (see escn/native/silu_kernel.py).
 *
 * With s = sigmoid(x) and c = 1 - s:
 *   silu(x)   = x s
 *   silu'(x)  = s (1 + x c)
 *   silu''(x) = s c (2 + x (c - s))
 * s and c are both computed from e = exp(-|x|) in (0, 1], t = 1 / (1 + e): for x >= 0, s = t and c = e t, for
 * x < 0 the other way round. So neither is a difference of nearly equal numbers (PyTorch's formulas form 1 - s,
 * which has no correct digit left once s rounds to 1), and exp never overflows.
 *
 * exp(a), a <= 0, is computed inline so that the loops vectorise (a call to libm's exp does not, and its vector
 * variants need -ffast-math): a = n ln2 + r with n = round(a / ln2) and |r| <= ln2 / 2 (ln2 split into a part
 * whose product with n is exact and a small rest), exp(r) by its Taylor polynomial (degree 7 in float32:
 * truncation error below 6e-9 relative; degree 13 in float64: below 5e-18), times 2^n built in the exponent
 * bits in two halves so that results below the smallest normal number are rounded once (2^n alone would not
 * be representable there). exp of arguments below EXP_MIN is 0; NaN inputs give NaN outputs (every formula
 * multiplies by x).
 *
 * Instantiated by kernels.c for one real type (REAL), name suffix (SUFFIX) and vector width (VW). Every kernel
 * processes the elements [e0, e1), split over `nthreads` threads. */

/* GCC vectorises with 256-bit registers by default on CPUs that have 512-bit ones (-mprefer-vector-width=256);
 * these loops run faster with 512-bit ones (float32, one thread: 25 ms against 32 ms per pass over 12M). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")
#define SILU_POP_OPTIONS
#endif

#if VW == 16
#define SILU_INT int32_t
#define SILU_EXP_BITS 23
#define SILU_EXP_BIAS 127
#define SILU_EXP_MIN (-104.0f)      /* exp(-104) < half the smallest subnormal float: rounds to 0 */
#define SILU_LN2_HI 0x1.62ep-1f     /* 12 significant bits: n * LN2_HI is exact for |n| <= 4096 */
#define SILU_LN2_LO 0x1.0bfbe8p-15f /* ln 2 - LN2_HI */
#define SILU_ROUND 0x1.8p23f        /* adding and subtracting it rounds to an integer (|v| < 2^22) */
#else
#define SILU_INT int64_t
#define SILU_EXP_BITS 52
#define SILU_EXP_BIAS 1023
#define SILU_EXP_MIN (-745.2)
#define SILU_LN2_HI 0x1.62e42feep-1 /* 32 significant bits */
#define SILU_LN2_LO 0x1.a39ef35793c76p-33
#define SILU_ROUND 0x1.8p52
#endif
#define SILU_LOG2E ((REAL)1.44269504088896340736)

/* 2^k for an integer k in the normal exponent range, written into the exponent bits. */
static inline REAL CAT(pow2i, SUFFIX)(SILU_INT k) {
    union { SILU_INT i; REAL r; } u;
    u.i = (k + SILU_EXP_BIAS) << SILU_EXP_BITS;
    return u.r;
}

/* exp(a) for a <= 0 (see above); NaN and a < EXP_MIN are taken as EXP_MIN. */
static inline REAL CAT(exp_nonpos, SUFFIX)(REAL a) {
    a = a >= SILU_EXP_MIN ? a : SILU_EXP_MIN;
    const REAL n = (a * SILU_LOG2E + SILU_ROUND) - SILU_ROUND;
    REAL r = a - n * SILU_LN2_HI;
    r = r - n * SILU_LN2_LO;
#if VW == 16
    REAL p = (REAL)(1.0 / 5040);
    p = p * r + (REAL)(1.0 / 720);
    p = p * r + (REAL)(1.0 / 120);
    p = p * r + (REAL)(1.0 / 24);
    p = p * r + (REAL)(1.0 / 6);
    p = p * r + (REAL)0.5;
    p = p * r + (REAL)1;
    p = p * r + (REAL)1;
#else
    REAL p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
#endif
    const SILU_INT k = (SILU_INT)n, k1 = k / 2;
    return p * CAT(pow2i, SUFFIX)(k1) * CAT(pow2i, SUFFIX)(k - k1);
}

/* s = sigmoid(x) and c = 1 - s, each to a few ulp. */
static inline void CAT(sigmoid_pair, SUFFIX)(REAL x, REAL *s, REAL *c) {
    const REAL e = CAT(exp_nonpos, SUFFIX)(x >= 0 ? -x : x);
    const REAL t = (REAL)1 / ((REAL)1 + e), u = e * t;
    *s = x >= 0 ? t : u;
    *c = x >= 0 ? u : t;
}

/* The loops run over blocks of SILU_BLOCK elements (4 kB of float32), each output's page written once by a
 * scalar store before the block's vector loop: on fresh memory (every output here is a new tensor) the page
 * faults then come outside the vector loop, which made a pass over 12M float32 into a new tensor 16.8 ms instead
 * of 20.6 ms (PyTorch's silu: 15.1 ms; into reused memory all take 8 ms). */
#define SILU_BLOCK 1024
#define SILU_BLOCKS(...)                                                                                           \
    for (int64_t b0 = r0; b0 < r1; b0 += SILU_BLOCK) {                                                             \
        const int64_t b1 = r1 - b0 < SILU_BLOCK ? r1 : b0 + SILU_BLOCK;                                            \
        __VA_ARGS__                                                                                                \
    }
#define SILU_TOUCH(p) (*(volatile REAL *)((p) + b0) = 0)

static inline void CAT(silu_range, SUFFIX)(int64_t r0, int64_t r1, const REAL *restrict x, REAL *restrict y) {
    SILU_BLOCKS(
        SILU_TOUCH(y);
        for (int64_t i = b0; i < b1; ++i) {
            REAL s, c;
            CAT(sigmoid_pair, SUFFIX)(x[i], &s, &c);
            y[i] = x[i] * s;
        })
}

/* out = g silu'(x) */
static inline void CAT(silu_grad_range, SUFFIX)(int64_t r0, int64_t r1, const REAL *restrict g,
                                               const REAL *restrict x, REAL *restrict out) {
    SILU_BLOCKS(
        SILU_TOUCH(out);
        for (int64_t i = b0; i < b1; ++i) {
            REAL s, c;
            CAT(sigmoid_pair, SUFFIX)(x[i], &s, &c);
            out[i] = g[i] * (s * ((REAL)1 + x[i] * c));
        })
}

/* out = gg g silu''(x) */
static inline void CAT(silu_grad2_range, SUFFIX)(int64_t r0, int64_t r1, const REAL *restrict gg,
                                                const REAL *restrict g, const REAL *restrict x, REAL *restrict out) {
    SILU_BLOCKS(
        SILU_TOUCH(out);
        for (int64_t i = b0; i < b1; ++i) {
            REAL s, c;
            CAT(sigmoid_pair, SUFFIX)(x[i], &s, &c);
            out[i] = gg[i] * g[i] * (s * c * ((REAL)2 + x[i] * (c - s)));
        })
}

/* a = gg silu'(x), b = gg g silu''(x): the backward of (g, x) -> g silu'(x) in one pass. */
static inline void CAT(silu_grad_backward_range, SUFFIX)(int64_t r0, int64_t r1, const REAL *restrict gg,
                                                        const REAL *restrict g, const REAL *restrict x,
                                                        REAL *restrict a, REAL *restrict b) {
    SILU_BLOCKS(
        SILU_TOUCH(a);
        SILU_TOUCH(b);
        for (int64_t i = b0; i < b1; ++i) {
            REAL s, c;
            CAT(sigmoid_pair, SUFFIX)(x[i], &s, &c);
            const REAL xi = x[i], ggi = gg[i];
            a[i] = ggi * (s * ((REAL)1 + xi * c));
            b[i] = ggi * g[i] * (s * c * ((REAL)2 + xi * (c - s)));
        })
}

int CAT(escn_silu, SUFFIX)(int64_t e0, int64_t e1, const REAL *x, REAL *y, int64_t nthreads) {
    SPLIT_OVER_THREADS((CAT(silu_range, SUFFIX)(r0, r1, x, y), 0))
}

int CAT(escn_silu_grad, SUFFIX)(int64_t e0, int64_t e1, const REAL *g, const REAL *x, REAL *out, int64_t nthreads) {
    SPLIT_OVER_THREADS((CAT(silu_grad_range, SUFFIX)(r0, r1, g, x, out), 0))
}

int CAT(escn_silu_grad2, SUFFIX)(int64_t e0, int64_t e1, const REAL *gg, const REAL *g, const REAL *x, REAL *out,
                                 int64_t nthreads) {
    SPLIT_OVER_THREADS((CAT(silu_grad2_range, SUFFIX)(r0, r1, gg, g, x, out), 0))
}

int CAT(escn_silu_grad_backward, SUFFIX)(int64_t e0, int64_t e1, const REAL *gg, const REAL *g, const REAL *x,
                                         REAL *a, REAL *b, int64_t nthreads) {
    SPLIT_OVER_THREADS((CAT(silu_grad_backward_range, SUFFIX)(r0, r1, gg, g, x, a, b), 0))
}

#ifdef SILU_POP_OPTIONS
#pragma GCC pop_options
#undef SILU_POP_OPTIONS
#endif
#undef SILU_BLOCK
#undef SILU_BLOCKS
#undef SILU_TOUCH
#undef SILU_INT
#undef SILU_EXP_BITS
#undef SILU_EXP_BIAS
#undef SILU_EXP_MIN
#undef SILU_LN2_HI
#undef SILU_LN2_LO
#undef SILU_ROUND
#undef SILU_LOG2E
