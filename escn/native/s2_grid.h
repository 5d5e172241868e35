/* The S2 activation's grid pass, fused: coefficients -> sphere grid -> SiLU (or a derivative) -> coefficients,
 * per edge, with the grid values held in a per-thread buffer (see escn/native/s2_grid_kernel.py).
 *
 * Layout. Every operand is an (E, K_i * C) array in the stage layout: K_i coefficient rows (a prefix of the K
 * rows of the plan), C channels fastest. The grid is res_beta x res_alpha = B x A points (latitude outer). Each
 * coefficient k factorises on the grid as lat[side][k][j] * az[mrow[k]][a] (a Legendre factor of the latitude
 * times cos / sin (m alpha) of the azimuth, one azimuth row per signed order). Synthesis with table `side`:
 *     h[r][j] = sum_{k: mrow[k] = r} lat[side][k][j] x[k],    f[j][a] = sum_r az[r][a] h[r][j]
 * analysis with table `side` (its transpose):
 *     h[r][j] = sum_a az[r][a] g[j][a],                      out[k] = sum_j lat[side][k][j] h[mrow[k]][j]
 * (K B + R B A multiply-adds each way instead of K B A for the dense table).
 *
 * Modes (s = SiLU of the synthesis f of x with table 0, s', s'' its derivatives; a0, a1 the syntheses of u0, u1
 * with their tables; products elementwise on the grid):
 *     0: out0 = analysis(s(f))                      2: out0 = analysis(a0 a1 s''(f))
 *     1: out0 = analysis(a0 s'(f))                  3: out0 = analysis(a1 s'(f)), out1 = analysis(a0 a1 s''(f))
 * each output with its own table and row count. Channels are processed in blocks of VW lanes (the last block
 * zero-padded), so every inner loop has a fixed length of one vector.
 *
 * dims: C, K, B, A, R, mode, Kx, Ku0, side_u0, Ku1, side_u1, Ko0, side_o0, Ko1, side_o1; mrow: K entries. */

#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")
#define S2G_POP_OPTIONS
#endif

/* one vector of VW lanes (GCC vector extension: every operation below is one vector instruction) */
typedef REAL CAT(s2g_vec, SUFFIX) __attribute__((vector_size(VW * sizeof(REAL))));
#define S2G_VEC CAT(s2g_vec, SUFFIX)

/* Every transform below is a sum of products with short inner loops (5-14 terms); each is tiled over S2G_TILE
 * outputs with independent accumulators held in registers (one FMA chain per output would wait on its own
 * latency), the last tile masked by `t < nt`. */
#define S2G_TILE 8
#define S2G_FOR_T _Pragma("GCC unroll 8") for (int t = 0; t < S2G_TILE; ++t)

/* Lanes [c0, c0 + VW) of the K_in coefficient rows of one edge, as vectors xv[k] -> grid (B A vectors), through
 * h (R B vectors). order[] lists the coefficients grouped by azimuth row, start[r] .. start[r + 1] those of row r
 * (rows of coefficients past K_in skipped). */
static inline void CAT(s2g_synth, SUFFIX)(const S2G_VEC *restrict xv, int64_t K_in, const REAL *restrict lat,
                                         const int64_t *restrict mrow, const int64_t *restrict order,
                                         const int64_t *restrict start, const REAL *restrict az, int64_t R, int64_t B,
                                         int64_t A, S2G_VEC *restrict h, S2G_VEC *restrict grid) {
    const S2G_VEC zero = {0};
    int64_t R_in = 0;
    for (int64_t k = 0; k < K_in; ++k) R_in = mrow[k] >= R_in ? mrow[k] + 1 : R_in;
    (void)R;
    for (int64_t r = 0; r < R_in; ++r) {
        for (int64_t j0 = 0; j0 < B; j0 += S2G_TILE) {
            const int64_t nt = B - j0 < S2G_TILE ? B - j0 : S2G_TILE;
            S2G_VEC acc[S2G_TILE];
            S2G_FOR_T acc[t] = zero;
            for (int64_t i = start[r]; i < start[r + 1]; ++i) {
                const int64_t k = order[i];
                if (k >= K_in) continue;
                const S2G_VEC x = xv[k];
                const REAL *restrict lk = lat + k * B + j0;
                S2G_FOR_T if (t < nt) acc[t] += lk[t] * x;
            }
            S2G_FOR_T if (t < nt) h[r * B + j0 + t] = acc[t];
        }
    }
    for (int64_t j = 0; j < B; ++j) {
        for (int64_t a0 = 0; a0 < A; a0 += S2G_TILE) {
            const int64_t nt = A - a0 < S2G_TILE ? A - a0 : S2G_TILE;
            S2G_VEC acc[S2G_TILE];
            S2G_FOR_T acc[t] = zero;
            for (int64_t r = 0; r < R_in; ++r) {
                const S2G_VEC hv = h[r * B + j];
                const REAL *restrict ar = az + r * A + a0;
                S2G_FOR_T if (t < nt) acc[t] += ar[t] * hv;
            }
            S2G_FOR_T if (t < nt) grid[j * A + a0 + t] = acc[t];
        }
    }
}

/* grid (B A vectors) -> lanes [c0, c0 + VW) of the K_out coefficient rows of one edge, through h. */
static inline void CAT(s2g_anal, SUFFIX)(const S2G_VEC *restrict grid, REAL *restrict dst, int64_t C, int64_t c0,
                                        int64_t K_out, const REAL *restrict lat, const int64_t *restrict mrow,
                                        const REAL *restrict az, int64_t B, int64_t A, S2G_VEC *restrict h) {
    const S2G_VEC zero = {0};
    int64_t R_out = 0;
    for (int64_t k = 0; k < K_out; ++k) R_out = mrow[k] >= R_out ? mrow[k] + 1 : R_out;
    const int64_t nl = C - c0 < VW ? C - c0 : VW;
    for (int64_t j = 0; j < B; ++j) {
        const S2G_VEC *restrict gj = grid + j * A;
        for (int64_t r0 = 0; r0 < R_out; r0 += S2G_TILE) {
            const int64_t nt = R_out - r0 < S2G_TILE ? R_out - r0 : S2G_TILE;
            S2G_VEC acc[S2G_TILE];
            S2G_FOR_T acc[t] = zero;
            for (int64_t a = 0; a < A; ++a) {
                const S2G_VEC gv = gj[a];
                const REAL *restrict ar = az + r0 * A + a;
                S2G_FOR_T if (t < nt) acc[t] += ar[t * A] * gv;
            }
            S2G_FOR_T if (t < nt) h[(r0 + t) * B + j] = acc[t];
        }
    }
    for (int64_t k0 = 0; k0 < K_out; k0 += S2G_TILE) {
        const int64_t nt = K_out - k0 < S2G_TILE ? K_out - k0 : S2G_TILE;
        S2G_VEC acc[S2G_TILE];
        S2G_FOR_T acc[t] = zero;
        for (int64_t j = 0; j < B; ++j) {
            S2G_FOR_T if (t < nt) acc[t] += lat[(k0 + t) * B + j] * h[mrow[k0 + t] * B + j];
        }
        S2G_FOR_T if (t < nt) {
            if (nl == VW) memcpy(dst + (k0 + t) * C + c0, &acc[t], sizeof acc[t]);
            else for (int64_t v = 0; v < nl; ++v) dst[(k0 + t) * C + c0 + v] = acc[t][v];
        }
    }
}

/* Lanes [c0, c0 + VW) of the K_in rows of src (K_in C values) -> K_in vectors, the lanes past C zero. */
static inline void CAT(s2g_load, SUFFIX)(const REAL *restrict src, int64_t C, int64_t c0, int64_t K_in,
                                        S2G_VEC *restrict xv) {
    const int64_t nl = C - c0 < VW ? C - c0 : VW;
    for (int64_t k = 0; k < K_in; ++k) {
        if (nl == VW) {
            memcpy(&xv[k], src + k * C + c0, sizeof xv[k]);
        } else {
            const S2G_VEC zero = {0};
            xv[k] = zero;
            for (int64_t v = 0; v < nl; ++v) xv[k][v] = src[k * C + c0 + v];
        }
    }
}

#define S2G_AHEAD 8 /* edges */
static inline void CAT(s2g_prefetch, SUFFIX)(const REAL *p, int64_t n) {
    for (int64_t i = 0; i < n; i += 64 / (int64_t)sizeof(REAL)) __builtin_prefetch(p + i, 0, 3);
}

static int CAT(s2g_range, SUFFIX)(int64_t r0, int64_t r1, const int64_t *dims, const int64_t *mrow,
                                  const REAL *lat, const REAL *az, const REAL *x, const REAL *u0, const REAL *u1,
                                  REAL *out0, REAL *out1) {
    if (r0 >= r1) return 0;
    const int64_t C = dims[0], K = dims[1], B = dims[2], A = dims[3], R = dims[4], mode = dims[5];
    const int64_t Kx = dims[6], Ku0 = dims[7], su0 = dims[8], Ku1 = dims[9], su1 = dims[10];
    const int64_t Ko0 = dims[11], so0 = dims[12], Ko1 = dims[13], so1 = dims[14];
    const int64_t G = B * A, GV = G * VW;
    S2G_VEC *buf = (S2G_VEC *)aligned_alloc(sizeof(S2G_VEC), sizeof(S2G_VEC) * (size_t)(3 * G + R * B + K + 1));
    int64_t *order = (int64_t *)malloc(sizeof(int64_t) * (size_t)(K + R + 1));
    if (buf == NULL || order == NULL) {
        free(buf);
        free(order);
        return 1;
    }
    int64_t *start = order + K;
    /* coefficients grouped by azimuth row (a counting sort of mrow) */
    for (int64_t r = 0; r <= R; ++r) start[r] = 0;
    for (int64_t k = 0; k < K; ++k) ++start[mrow[k] + 1];
    for (int64_t r = 0; r < R; ++r) start[r + 1] += start[r];
    {
        int64_t *fill = (int64_t *)malloc(sizeof(int64_t) * (size_t)(R + 1));
        if (fill == NULL) {
            free(buf);
            free(order);
            return 1;
        }
        for (int64_t r = 0; r <= R; ++r) fill[r] = start[r];
        for (int64_t k = 0; k < K; ++k) order[fill[mrow[k]]++] = k;
        free(fill);
    }
    S2G_VEC *fv = buf, *p0v = buf + G, *p1v = buf + 2 * G, *h = buf + 3 * G, *xv = buf + 3 * G + R * B;
    REAL *f = (REAL *)fv, *p0 = (REAL *)p0v, *p1 = (REAL *)p1v;
    for (int64_t e = r0; e < r1; ++e) {
        if (e + S2G_AHEAD < r1) { /* the inputs of a later edge, so that their loads do not wait on memory */
            CAT(s2g_prefetch, SUFFIX)(x + (e + S2G_AHEAD) * Kx * C, Kx * C);
            if (mode >= 1) CAT(s2g_prefetch, SUFFIX)(u0 + (e + S2G_AHEAD) * Ku0 * C, Ku0 * C);
            if (mode >= 2) CAT(s2g_prefetch, SUFFIX)(u1 + (e + S2G_AHEAD) * Ku1 * C, Ku1 * C);
        }
        for (int64_t c0 = 0; c0 < C; c0 += VW) {
            CAT(s2g_load, SUFFIX)(x + e * Kx * C, C, c0, Kx, xv);
            CAT(s2g_synth, SUFFIX)(xv, Kx, lat, mrow, order, start, az, R, B, A, h, fv);
            if (mode >= 1) {
                CAT(s2g_load, SUFFIX)(u0 + e * Ku0 * C, C, c0, Ku0, xv);
                CAT(s2g_synth, SUFFIX)(xv, Ku0, lat + su0 * K * B, mrow, order, start, az, R, B, A, h, p0v);
            }
            if (mode >= 2) {
                CAT(s2g_load, SUFFIX)(u1 + e * Ku1 * C, C, c0, Ku1, xv);
                CAT(s2g_synth, SUFFIX)(xv, Ku1, lat + su1 * K * B, mrow, order, start, az, R, B, A, h, p1v);
            }
            if (mode == 0) {
                for (int64_t i = 0; i < GV; ++i) {
                    REAL s, c;
                    CAT(sigmoid_pair, SUFFIX)(f[i], &s, &c);
                    f[i] = f[i] * s;
                }
            } else if (mode == 1) {
                for (int64_t i = 0; i < GV; ++i) {
                    REAL s, c;
                    CAT(sigmoid_pair, SUFFIX)(f[i], &s, &c);
                    f[i] = p0[i] * (s * ((REAL)1 + f[i] * c));
                }
            } else if (mode == 2) {
                for (int64_t i = 0; i < GV; ++i) {
                    REAL s, c;
                    CAT(sigmoid_pair, SUFFIX)(f[i], &s, &c);
                    f[i] = p0[i] * p1[i] * (s * c * ((REAL)2 + f[i] * (c - s)));
                }
            } else {
                for (int64_t i = 0; i < GV; ++i) {
                    REAL s, c;
                    CAT(sigmoid_pair, SUFFIX)(f[i], &s, &c);
                    const REAL fi = f[i], b = p1[i];
                    f[i] = b * (s * ((REAL)1 + fi * c));
                    p1[i] = p0[i] * b * (s * c * ((REAL)2 + fi * (c - s)));
                }
            }
            CAT(s2g_anal, SUFFIX)(fv, out0 + e * Ko0 * C, C, c0, Ko0, lat + so0 * K * B, mrow, az, B, A, h);
            if (mode == 3) CAT(s2g_anal, SUFFIX)(p1v, out1 + e * Ko1 * C, C, c0, Ko1, lat + so1 * K * B, mrow, az, B, A, h);
        }
    }
    free(buf);
    free(order);
    return 0;
}

int CAT(escn_s2_silu_grid, SUFFIX)(int64_t e0, int64_t e1, const int64_t *dims, const int64_t *mrow,
                                   const REAL *lat, const REAL *az, const REAL *x, const REAL *u0, const REAL *u1,
                                   REAL *out0, REAL *out1, int64_t nthreads) {
    SPLIT_OVER_THREADS(CAT(s2g_range, SUFFIX)(r0, r1, dims, mrow, lat, az, x, u0, u1, out0, out1))
}

#ifdef S2G_POP_OPTIONS
#pragma GCC pop_options
#undef S2G_POP_OPTIONS
#endif
#undef S2G_VEC
#undef S2G_TILE
#undef S2G_AHEAD
#undef S2G_FOR_T
