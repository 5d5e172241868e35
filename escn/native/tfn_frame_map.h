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
 */

/* Instantiated by kernels.c for one real type (REAL), name suffix (SUFFIX) and tile width (VW values).
 *
 * The inner loops work on tiles of VW consecutive values held in a GCC/Clang vector (64 bytes). A chain of
 * multiply-adds into one accumulator waits on each previous one, so each loop keeps four independent
 * accumulators (four terms, or four rows of the weight block): groups with fewer than four members are
 * padded with a zero input row and a scratch output row. A last partial tile (a multiplicity that is not a
 * multiple of VW) takes plain loops. */

typedef REAL CAT(vec, SUFFIX) __attribute__((vector_size(VW * sizeof(REAL))));
#define VEC CAT(vec, SUFFIX)
#define LOAD CAT(load, SUFFIX)
#define ADD_TO CAT(add_to, SUFFIX)

static inline VEC LOAD(const REAL *p) {
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* p[0:VW] += c * v */
static inline void ADD_TO(REAL *p, REAL c, VEC v) {
    VEC q = LOAD(p) + c * v;
    memcpy(p, &q, sizeof q);
}

/* Four terms at once: y_j[v0 : v0 + n] += c_j * sum over u < k of a_j[u] * B[u * ldb + v0 + 0:n], j < 4. */
static inline void CAT(rows_times_block, SUFFIX)(const REAL *const a[4], REAL *const y[4], const REAL c[4], int64_t k,
                                                const REAL *restrict B, int64_t ldb, int64_t v0, int64_t n) {
    if (n == VW) {
        VEC s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        const REAL *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
        for (int64_t u = 0; u < k; ++u) {
            const VEC b = LOAD(B + u * ldb + v0);
            s0 += a0[u] * b;
            s1 += a1[u] * b;
            s2 += a2[u] * b;
            s3 += a3[u] * b;
        }
        ADD_TO(y[0] + v0, c[0], s0);
        ADD_TO(y[1] + v0, c[1], s1);
        ADD_TO(y[2] + v0, c[2], s2);
        ADD_TO(y[3] + v0, c[3], s3);
    } else {
        for (int j = 0; j < 4; ++j)
            for (int64_t v = v0; v < v0 + n; ++v) {
                REAL s = 0;
                for (int64_t u = 0; u < k; ++u) s += a[j][u] * B[u * ldb + v];
                y[j][v] += c[j] * s;
            }
    }
}

/* Ask for the cache lines of [p + PREFETCH_AHEAD, p + PREFETCH_AHEAD + n) ahead of use: the weights stream from
 * memory once, and with the hardware prefetcher alone the time was compute + transfer (L = 6, C = 16, forward:
 * 31.8 ms without, 25.3 ms with; a non-temporal hint instead of keeping the lines was slower than none). */
static inline void CAT(prefetch_ahead, SUFFIX)(const REAL *p, int64_t n) {
    if (PREFETCH_AHEAD <= 0) return;
    const char *c = (const char *)(p) + PREFETCH_AHEAD;
    for (int64_t b = 0; b < n * (int64_t)sizeof(REAL); b += 64) __builtin_prefetch(c + b, 0, PREFETCH_LOCALITY);
}

/* The same for lines about to be written (measured: the weight-gradient pass 76 -> 57 ms at L = 6, C = 16). */
static inline void CAT(prefetch_ahead_for_write, SUFFIX)(REAL *p, int64_t n) {
    if (PREFETCH_AHEAD <= 0) return;
    char *c = (char *)(p) + PREFETCH_AHEAD;
    for (int64_t b = 0; b < n * (int64_t)sizeof(REAL); b += 64) __builtin_prefetch(c + b, 1, PREFETCH_LOCALITY);
}

/* Fill the four (input, output, coefficient) slots of the term group starting at t (before t1). */
static inline void CAT(term_group, SUFFIX)(int64_t t, int64_t t1, const int64_t *restrict term,
                                          const double *restrict coef, const REAL *in, REAL *out, const REAL *zero,
                                          REAL *scratch, const REAL *a[4], REAL *y[4], REAL c[4]) {
    for (int j = 0; j < 4; ++j) {
        if (t + j < t1) {
            a[j] = in + term[2 * (t + j)];
            y[j] = out + term[2 * (t + j) + 1];
            c[j] = (REAL)coef[t + j];
        } else {
            a[j] = zero;
            y[j] = scratch;
            c[j] = 0;
        }
    }
}

/* Register-tiled forms for blocks whose row count is a multiple of 16 and row length a multiple of VW (every
 * block when the multiplicities are 16, 32, ...). A 16 x VW tile of the block is loaded once into 16 vector
 * registers and every term of the path is applied to it: 16 multiply-adds per term and tile, no padding of the
 * term count, no per-group set-up. The backward uses them (L = 6, C = 16, both adjoints, warm memory: 57 -> 51 ms,
 * and 84 -> 77 ms into a fresh weight gradient). The forward keeps the term groups above: there the tiled form
 * needs less compute (10.5 against 13.6 ms with the weights in cache) but overlaps it worse with the stream of
 * weights from memory (28.4 against 26.4 ms).
 *
 * terms_times_tile: for t in [t0, t1), out + term[2 t + co] += coef[t] (the 16 values at in + term[2 t + ci]
 * times the tile b); terms_times_tiles does it for every tile of a block B. */
static inline void CAT(terms_times_tile, SUFFIX)(const VEC b[16], const int64_t *restrict term,
                                                const double *restrict coef, int64_t t0, int64_t t1, int ci,
                                                const REAL *in, int co, REAL *out) {
    for (int64_t t = t0; t < t1; ++t) {
        const REAL *a = in + term[2 * t + ci];
        VEC s0 = a[0] * b[0], s1 = a[1] * b[1]; /* two chains of 8 multiply-adds */
#pragma GCC unroll 16
        for (int i = 2; i < 16; i += 2) {
            s0 += a[i] * b[i];
            s1 += a[i + 1] * b[i + 1];
        }
        ADD_TO(out + term[2 * t + co], (REAL)coef[t], s0 + s1);
    }
}

static inline void CAT(terms_times_tiles, SUFFIX)(const REAL *restrict B, int64_t nrows, int64_t ncols,
                                                 const int64_t *restrict term, const double *restrict coef,
                                                 int64_t t0, int64_t t1, int ci, int co, const REAL *in,
                                                 REAL *out) {
    for (int64_t v0 = 0; v0 < ncols; v0 += VW)
        for (int64_t u0 = 0; u0 < nrows; u0 += 16) {
            VEC b[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) b[i] = LOAD(B + (u0 + i) * ncols + v0);
            CAT(terms_times_tile, SUFFIX)(b, term, coef, t0, t1, ci, in + u0, co, out + v0);
        }
}

/* The weight-gradient block G (mi x mo) of one path, tiled the same way: G[u, v] = sum over terms t of
 * coef[t] x_t[u] gy_t[v], a 16 x VW tile accumulated in registers and written once. */
static inline void CAT(grad_block_tiles, SUFFIX)(REAL *restrict G, int64_t mi, int64_t mo,
                                                const int64_t *restrict term, const double *restrict coef,
                                                int64_t t0, int64_t t1, const REAL *xb, const REAL *gyb) {
    for (int64_t v0 = 0; v0 < mo; v0 += VW)
        for (int64_t u0 = 0; u0 < mi; u0 += 16) {
            VEC q[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) q[i] = (VEC){0};
            for (int64_t t = t0; t < t1; ++t) {
                const REAL *xt = xb + term[2 * t] + u0;
                const VEC g = (REAL)coef[t] * LOAD(gyb + term[2 * t + 1] + v0);
#pragma GCC unroll 16
                for (int i = 0; i < 16; ++i) q[i] += xt[i] * g;
            }
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) memcpy(G + (u0 + i) * mo + v0, &q[i], sizeof(VEC));
        }
}

#if defined(__AVX512F__) && VW == 16
/* b[i] = column i of the 16 x 16 tile at W (row length ldw), by an in-register transpose in place of 16
 * gathers. */
static inline void transposed_tile_f32(VEC b[16], const float *W, int64_t ldw) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(W + i * ldw);
    transpose16x16_ps(r);
    memcpy(b, r, sizeof r);
}

/* gx_t[u] += coef[t] sum over v of W[u, v] gy_t[v] for a path whose block is mi x mo, both multiples of 16:
 * each 16 x 16 tile is transposed in registers and the terms applied to it as in terms_times_tiles. */
static inline void transposed_terms_times_tiles_f32(const float *restrict W, int64_t mi, int64_t mo,
                                                    const int64_t *restrict term, const double *restrict coef,
                                                    int64_t t0, int64_t t1, const float *gyb, float *gxb) {
    for (int64_t u0 = 0; u0 < mi; u0 += 16)
        for (int64_t v0 = 0; v0 < mo; v0 += 16) {
            VEC b[16];
            transposed_tile_f32(b, W + u0 * mo + v0, mo);
            CAT(terms_times_tile, SUFFIX)(b, term, coef, t0, t1, 1, gyb + v0, 0, gxb + u0);
        }
}
#endif

static inline int CAT(tiles_fit, SUFFIX)(int64_t nrows, int64_t ncols) { return nrows % 16 == 0 && ncols % VW == 0; }

/* wt (mo x mi) = transpose of the row-major block W (mi x mo). With AVX-512, tiles of VW rows are read as
 * columns by gathers (16 float or 8 double lanes per instruction) instead of element by element. */
static inline void CAT(transpose_block, SUFFIX)(REAL *restrict wt, const REAL *restrict W, int64_t mi, int64_t mo) {
    int64_t u0 = 0;
#if defined(__AVX512F__)
    if (mo <= INT32_MAX / VW) {
        for (; u0 + VW <= mi; u0 += VW) {
#if VW == 16
            const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                   _mm512_set1_epi32((int)mo));
            for (int64_t v = 0; v < mo; ++v)
                _mm512_storeu_ps((float *)(wt + v * mi + u0), _mm512_i32gather_ps(idx, (const float *)(W + u0 * mo + v), 4));
#else
            const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)mo));
            for (int64_t v = 0; v < mo; ++v)
                _mm512_storeu_pd((double *)(wt + v * mi + u0), _mm512_i32gather_pd(idx, (const double *)(W + u0 * mo + v), 8));
#endif
        }
    }
#endif
    for (int64_t u = u0; u < mi; ++u)
        for (int64_t v = 0; v < mo; ++v) wt[v * mi + u] = W[u * mo + v];
}

/* y[e] = map(x[e], w[e]) for e in [e0, e1). row_max: the largest multiplicity (length of a term's row).
 * Returns 0, or -1 if a buffer could not be allocated. */
static int CAT(tfn_forward_range, SUFFIX)(
    int64_t e0, int64_t e1, int64_t n_paths, const int64_t *restrict path, const int64_t *restrict term,
    const double *restrict coef, int64_t in_dim, const int64_t *restrict perm_in, int64_t out_dim,
    const int64_t *restrict perm_out, const REAL *restrict x, int64_t ldx, const REAL *restrict w, int64_t ldw,
    REAL *restrict y, int64_t ldy, int64_t row_max) {
    const int64_t pad = row_max + VW;
    REAL *xb = calloc((size_t)(in_dim + out_dim + 2 * pad), sizeof(REAL));
    if (!xb) return -1;
    REAL *yb = xb + in_dim, *zero = yb + out_dim, *scratch = zero + pad;
    const REAL *a[4];
    REAL *yr[4], c[4];
    for (int64_t e = e0; e < e1; ++e) {
        const REAL *xe = x + e * ldx;
        const REAL *we = w + e * ldw;
        for (int64_t k = 0; k < in_dim; ++k) xb[k] = xe[perm_in[k]];
        memset(yb, 0, sizeof(REAL) * (size_t)out_dim);
        for (int64_t p = 0; p < n_paths; ++p) {
            const REAL *W = we + path[5 * p];
            const int64_t mi = path[5 * p + 1], mo = path[5 * p + 2];
            CAT(prefetch_ahead, SUFFIX)(W, mi * mo);
            for (int64_t t = path[5 * p + 3]; t < path[5 * p + 4]; t += 4) {
                CAT(term_group, SUFFIX)(t, path[5 * p + 4], term, coef, xb, yb, zero, scratch, a, yr, c);
                for (int64_t v0 = 0; v0 < mo; v0 += VW)
                    CAT(rows_times_block, SUFFIX)(a, yr, c, mi, W, mo, v0, mo - v0 < VW ? mo - v0 : VW);
            }
        }
        REAL *ye = y + e * ldy;
        for (int64_t k = 0; k < out_dim; ++k) ye[perm_out[k]] = yb[k];
    }
    free(xb);
    return 0;
}

/* gx_t += coef[t] W gy_t (W: the mi x mo block of one path) for the path's terms [t0, t1): gy rows are read at
 * gyb + term[2 t + 1], gx rows written at gxb + term[2 t]. wt: room for mi * mo values. */
static inline void CAT(input_adjoint_of_path, SUFFIX)(const REAL *restrict W, int64_t mi, int64_t mo, REAL *restrict wt,
                                                     const int64_t *restrict term, const double *restrict coef,
                                                     int64_t t0, int64_t t1, const REAL *gyb, REAL *gxb,
                                                     const REAL *zero, REAL *scratch) {
#if defined(__AVX512F__) && VW == 16
    if (mi % 16 == 0 && mo % 16 == 0) {
        transposed_terms_times_tiles_f32(W, mi, mo, term, coef, t0, t1, gyb, gxb);
        return;
    }
#endif
    /* gx row += c * W gy-row, i.e. gy-row times the transposed block: transpose it once */
    CAT(transpose_block, SUFFIX)(wt, W, mi, mo);
    if (CAT(tiles_fit, SUFFIX)(mo, mi)) {
        CAT(terms_times_tiles, SUFFIX)(wt, mo, mi, term, coef, t0, t1, 1, 0, gyb, gxb);
        return;
    }
    const REAL *a[4];
    REAL *gr[4], c[4];
    for (int64_t t = t0; t < t1; t += 4) {
        CAT(term_group, SUFFIX)(t, t1, term, coef, NULL, NULL, zero, scratch, a, gr, c);
        for (int j = 0; j < 4 && t + j < t1; ++j) { /* inputs are gy rows, outputs gx rows */
            a[j] = gyb + term[2 * (t + j) + 1];
            gr[j] = gxb + term[2 * (t + j)];
        }
        for (int64_t u0 = 0; u0 < mi; u0 += VW)
            CAT(rows_times_block, SUFFIX)(a, gr, c, mo, wt, mi, u0, mi - u0 < VW ? mi - u0 : VW);
    }
}

/* The two adjoints of the map, for e in [e0, e1), in one pass over the weights:
 * gx[e] = (d map / d x)^T gy[e]   (if gx is not NULL; needs w)
 * gw[e] = (d map / d w)^T gy[e]   (if gw is not NULL; needs x), written once, in the TFN layout of w.
 * block_max: the largest mul_in * mul_out; n_terms_max: the most terms of one path; row_max: the largest
 * multiplicity. */
static int CAT(tfn_backward_range, SUFFIX)(
    int64_t e0, int64_t e1, int64_t n_paths, const int64_t *restrict path, const int64_t *restrict term,
    const double *restrict coef, int64_t in_dim, const int64_t *restrict perm_in, int64_t out_dim,
    const int64_t *restrict perm_out, const REAL *restrict gy, int64_t ldgy, const REAL *restrict x, int64_t ldx,
    const REAL *restrict w, int64_t ldw, REAL *restrict gx, int64_t ldgx, REAL *restrict gw, int64_t ldgw,
    int64_t block_max, int64_t n_terms_max, int64_t row_max) {
    const int64_t pad = row_max + VW;
    const int64_t ntp = n_terms_max + 4;
    REAL *buf = calloc((size_t)(2 * in_dim + out_dim + block_max + ntp * (row_max + 3) + 2 * pad), sizeof(REAL));
    const REAL **rows = malloc(sizeof(REAL *) * (size_t)ntp);
    if (!buf || !rows) {
        free(buf);
        free(rows);
        return -1;
    }
    REAL *xb = buf, *gxb = xb + in_dim, *gyb = gxb + in_dim, *wt = gyb + out_dim;
    REAL *s = wt + block_max; /* S[k, u]: coefficient of term k times its x-row value at u, rows padded to 4 */
    REAL *zero = s + ntp * (row_max + 3), *scratch = zero + pad;
    for (int64_t e = e0; e < e1; ++e) {
        const REAL *gye = gy + e * ldgy;
        for (int64_t k = 0; k < out_dim; ++k) gyb[k] = gye[perm_out[k]];
        if (gw) {
            const REAL *xe = x + e * ldx;
            for (int64_t k = 0; k < in_dim; ++k) xb[k] = xe[perm_in[k]];
        }
        if (gx) memset(gxb, 0, sizeof(REAL) * (size_t)in_dim);
        for (int64_t p = 0; p < n_paths; ++p) {
            const int64_t mi = path[5 * p + 1], mo = path[5 * p + 2];
            const int64_t t0 = path[5 * p + 3], t1 = path[5 * p + 4];
            if (gx && t1 > t0) {
                const REAL *W = w + e * ldw + path[5 * p];
                CAT(prefetch_ahead, SUFFIX)(W, mi * mo);
                CAT(input_adjoint_of_path, SUFFIX)(W, mi, mo, wt, term, coef, t0, t1, gyb, gxb, zero, scratch);
            }
            if (gw) {
                /* gw[u, :] = sum over terms k of c_k x_k[u] gy_k[:], each element of gw written once: by tiles where
                 * the block shape allows, else four rows u at once from S[k, :] = c_k x_k[:] (rows padded with zeros
                 * to a multiple of four). Non-temporal stores were measured here (L = 6, C = 16): 56.5 -> 48 ms into a
                 * reused gradient, but 78 -> 95 ms into a freshly allocated one, the usual case, so the stores are
                 * ordinary. */
                REAL *G = gw + e * ldgw + path[5 * p];
                CAT(prefetch_ahead_for_write, SUFFIX)(G, mi * mo);
                if (CAT(tiles_fit, SUFFIX)(mi, mo)) {
                    CAT(grad_block_tiles, SUFFIX)(G, mi, mo, term, coef, t0, t1, xb, gyb);
                    continue;
                }
                const int64_t nt = t1 - t0, ld = (mi + 3) & ~(int64_t)3;
                for (int64_t k = 0; k < nt; ++k) {
                    const REAL ck = (REAL)coef[t0 + k];
                    const REAL *xk = xb + term[2 * (t0 + k)];
                    REAL *sk = s + k * ld;
                    for (int64_t u = 0; u < mi; ++u) sk[u] = ck * xk[u];
                    for (int64_t u = mi; u < ld; ++u) sk[u] = 0;
                    rows[k] = gyb + term[2 * (t0 + k) + 1];
                }
                for (int64_t u = 0; u < mi; u += 4) {
                    const int64_t nu = mi - u < 4 ? mi - u : 4;
                    for (int64_t v0 = 0; v0 < mo; v0 += VW) {
                        const int64_t n = mo - v0 < VW ? mo - v0 : VW;
                        if (n == VW) {
                            VEC q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0};
                            for (int64_t k = 0; k < nt; ++k) {
                                const VEC g = LOAD(rows[k] + v0);
                                const REAL *sk = s + k * ld + u;
                                q0 += sk[0] * g;
                                q1 += sk[1] * g;
                                q2 += sk[2] * g;
                                q3 += sk[3] * g;
                            }
                            const VEC q[4] = {q0, q1, q2, q3};
                            for (int64_t j = 0; j < nu; ++j) memcpy(G + (u + j) * mo + v0, &q[j], sizeof(VEC));
                        } else {
                            for (int64_t j = 0; j < nu; ++j)
                                for (int64_t v = v0; v < v0 + n; ++v) {
                                    REAL q = 0;
                                    for (int64_t k = 0; k < nt; ++k) q += s[k * ld + u + j] * rows[k][v];
                                    G[(u + j) * mo + v] = q;
                                }
                        }
                    }
                }
            }
        }
        if (gx) {
            REAL *gxe = gx + e * ldgx;
            for (int64_t k = 0; k < in_dim; ++k) gxe[perm_in[k]] = gxb[k];
        }
    }
    free(rows);
    free(buf);
    return 0;
}

/* The exported kernels: the ranges above split over nthreads threads (with OpenMP; else one call). */
int CAT(escn_tfn_forward, SUFFIX)(
    int64_t e0, int64_t e1, int64_t n_paths, const int64_t *restrict path, const int64_t *restrict term,
    const double *restrict coef, int64_t in_dim, const int64_t *restrict perm_in, int64_t out_dim,
    const int64_t *restrict perm_out, const REAL *restrict x, int64_t ldx, const REAL *restrict w, int64_t ldw,
    REAL *restrict y, int64_t ldy, int64_t row_max, int64_t nthreads) {
    SPLIT_OVER_THREADS(CAT(tfn_forward_range, SUFFIX)(r0, r1, n_paths, path, term, coef, in_dim, perm_in,
                       out_dim, perm_out, x, ldx, w, ldw, y, ldy, row_max))
}

int CAT(escn_tfn_backward, SUFFIX)(
    int64_t e0, int64_t e1, int64_t n_paths, const int64_t *restrict path, const int64_t *restrict term,
    const double *restrict coef, int64_t in_dim, const int64_t *restrict perm_in, int64_t out_dim,
    const int64_t *restrict perm_out, const REAL *restrict gy, int64_t ldgy, const REAL *restrict x, int64_t ldx,
    const REAL *restrict w, int64_t ldw, REAL *restrict gx, int64_t ldgx, REAL *restrict gw, int64_t ldgw,
    int64_t block_max, int64_t n_terms_max, int64_t row_max, int64_t nthreads) {
    SPLIT_OVER_THREADS(CAT(tfn_backward_range, SUFFIX)(r0, r1, n_paths, path, term, coef, in_dim, perm_in,
                       out_dim, perm_out, gy, ldgy, x, ldx, w, ldw, gx, ldgx, gw, ldgw, block_max, n_terms_max,
                       row_max))
}

#undef VEC
#undef LOAD
#undef ADD_TO
