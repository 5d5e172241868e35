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

/* Lanes [c0, c0 + VW) of the K_in coefficient rows of one edge -> grid (B A vectors), through h (R B vectors). */
static inline void CAT(s2g_synth, SUFFIX)(const REAL *restrict src, int64_t C, int64_t c0, int64_t K_in,
                                         const REAL *restrict lat, const int64_t *restrict mrow,
                                         const REAL *restrict az, int64_t B, int64_t A, S2G_VEC *restrict h,
                                         S2G_VEC *restrict grid) {
    int64_t R_in = 0;
    for (int64_t k = 0; k < K_in; ++k) R_in = mrow[k] >= R_in ? mrow[k] + 1 : R_in;
    const int64_t nl = C - c0 < VW ? C - c0 : VW;
    const S2G_VEC zero = {0};
    for (int64_t i = 0; i < R_in * B; ++i) h[i] = zero;
    for (int64_t k = 0; k < K_in; ++k) {
        S2G_VEC xv = zero;
        if (nl == VW) memcpy(&xv, src + k * C + c0, sizeof xv);
        else for (int64_t v = 0; v < nl; ++v) xv[v] = src[k * C + c0 + v];
        S2G_VEC *restrict hr = h + mrow[k] * B;
        const REAL *restrict lk = lat + k * B;
        for (int64_t j = 0; j < B; ++j) hr[j] += lk[j] * xv;
    }
    for (int64_t j = 0; j < B; ++j) {
        for (int64_t a = 0; a < A; ++a) {
            S2G_VEC acc = h[j] * az[a];
            for (int64_t r = 1; r < R_in; ++r) acc += az[r * A + a] * h[r * B + j];
            grid[j * A + a] = acc;
        }
    }
}

/* grid (B A vectors) -> lanes [c0, c0 + VW) of the K_out coefficient rows of one edge, through h. */
static inline void CAT(s2g_anal, SUFFIX)(const S2G_VEC *restrict grid, REAL *restrict dst, int64_t C, int64_t c0,
                                        int64_t K_out, const REAL *restrict lat, const int64_t *restrict mrow,
                                        const REAL *restrict az, int64_t B, int64_t A, S2G_VEC *restrict h) {
    int64_t R_out = 0;
    for (int64_t k = 0; k < K_out; ++k) R_out = mrow[k] >= R_out ? mrow[k] + 1 : R_out;
    const int64_t nl = C - c0 < VW ? C - c0 : VW;
    for (int64_t j = 0; j < B; ++j) {
        const S2G_VEC *restrict gj = grid + j * A;
        for (int64_t r = 0; r < R_out; ++r) {
            const REAL *restrict ar = az + r * A;
            S2G_VEC acc = ar[0] * gj[0];
            for (int64_t a = 1; a < A; ++a) acc += ar[a] * gj[a];
            h[r * B + j] = acc;
        }
    }
    for (int64_t k = 0; k < K_out; ++k) {
        const S2G_VEC *restrict hr = h + mrow[k] * B;
        const REAL *restrict lk = lat + k * B;
        S2G_VEC acc = lk[0] * hr[0];
        for (int64_t j = 1; j < B; ++j) acc += lk[j] * hr[j];
        if (nl == VW) memcpy(dst + k * C + c0, &acc, sizeof acc);
        else for (int64_t v = 0; v < nl; ++v) dst[k * C + c0 + v] = acc[v];
    }
}

static int CAT(s2g_range, SUFFIX)(int64_t r0, int64_t r1, const int64_t *dims, const int64_t *mrow,
                                  const REAL *lat, const REAL *az, const REAL *x, const REAL *u0, const REAL *u1,
                                  REAL *out0, REAL *out1) {
    if (r0 >= r1) return 0;
    const int64_t C = dims[0], K = dims[1], B = dims[2], A = dims[3], R = dims[4], mode = dims[5];
    const int64_t Kx = dims[6], Ku0 = dims[7], su0 = dims[8], Ku1 = dims[9], su1 = dims[10];
    const int64_t Ko0 = dims[11], so0 = dims[12], Ko1 = dims[13], so1 = dims[14];
    const int64_t G = B * A, GV = G * VW;
    S2G_VEC *buf = (S2G_VEC *)aligned_alloc(sizeof(S2G_VEC), sizeof(S2G_VEC) * (size_t)(3 * G + R * B + 1));
    if (buf == NULL) return 1;
    S2G_VEC *fv = buf, *p0v = buf + G, *p1v = buf + 2 * G, *h = buf + 3 * G;
    REAL *f = (REAL *)fv, *p0 = (REAL *)p0v, *p1 = (REAL *)p1v;
    for (int64_t e = r0; e < r1; ++e) {
        const REAL *xe = x + e * Kx * C;
        for (int64_t c0 = 0; c0 < C; c0 += VW) {
            CAT(s2g_synth, SUFFIX)(xe, C, c0, Kx, lat, mrow, az, B, A, h, fv);
            if (mode >= 1) CAT(s2g_synth, SUFFIX)(u0 + e * Ku0 * C, C, c0, Ku0, lat + su0 * K * B, mrow, az, B, A, h, p0v);
            if (mode >= 2) CAT(s2g_synth, SUFFIX)(u1 + e * Ku1 * C, C, c0, Ku1, lat + su1 * K * B, mrow, az, B, A, h, p1v);
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
