/* Rotation of l-grouped features into the edge frame and back, factorised (see escn/nn/edge_rotation.py and
 * escn/native/rotation_kernel.py): per edge e, order group q (order l, M channels of d = 2l + 2 slots, r kept
 * rows) and channel, with the slots read as l + 1 complex numbers (m = 0 and a zero slot, then the (+m, -m)
 * pairs) and pa[m] = cos_a[e, m] + i sin_a[e, m], pb likewise:
 *
 *   to_frame:  y = ((((x * pa) @ J) * pb) @ JrT)          (J: d x d, JrT: d x r, row-vector products)
 *
 * for every order, l = 0 included (there d = 2, J and JrT pick the m = 0 slot, and the phases at m = 0 are 1):
 * so the map is linear in each of x, (cos_a, sin_a), (cos_b, sin_b) separately, which its autograd relies on.
 *
 * The adjoint kernel takes gy and returns gx = (to_frame)^T gy, which is also the rotation out of the frame,
 * and, given x, the gradients of <to_frame(x), gy> with respect to the four phase tables.
 *
 * group[8 q + 0..7] = l, M, d, r, x offset (channel-major, c * d + k), y offset (c * r + i), offset of J and
 * of JrT in mats. Tables cos_a, sin_a, cos_b, sin_b have row stride ldt >= lmax + 1. Edges [e0, e1) are
 * processed. */

/* Instantiated by kernels.c for one real type (REAL), name suffix (SUFFIX) and tile width (VW channels).
 *
 * Every step works on VW channels at once: a channel tile is transposed into slot vectors T[k] (lane c =
 * channel c0 + c; lanes past the last channel hold zeros and are not stored), so the complex multiplies are
 * vector-times-scalar and the fixed matrices J, JrT enter as broadcast scalars. */

typedef REAL CAT(qvec, SUFFIX) __attribute__((vector_size(VW * sizeof(REAL))));
#define QVEC CAT(qvec, SUFFIX)

#if defined(__AVX512F__) && VW == 16
/* The mask of the first w lanes (w <= 16) of a float32 vector. */
static inline __mmask16 first_lanes(int64_t w) { return (__mmask16)((1u << w) - 1u); }
#endif

/* T (n slot vectors) = channels [c0, c0 + nc) of a block with row stride ld (channel-major). In float32 with
 * AVX-512: 16 slots at a time, masked row loads and one in-register transpose. Otherwise written through T's
 * memory as scalars (inserting lanes into vector registers one by one was slower). */
static inline void CAT(tile_in, SUFFIX)(QVEC *restrict T, const REAL *restrict src, int64_t ld, int64_t n,
                                       int64_t c0, int64_t nc) {
#if defined(__AVX512F__) && VW == 16
    for (int64_t k0 = 0; k0 < n; k0 += 16) {
        const int64_t w = n - k0 < 16 ? n - k0 : 16;
        __m512 r[16];
        for (int64_t c = 0; c < 16; ++c)
            r[c] = c < nc ? _mm512_maskz_loadu_ps(first_lanes(w), src + (c0 + c) * ld + k0) : _mm512_setzero_ps();
        transpose16x16_ps(r);
        memcpy(T + k0, r, sizeof(__m512) * (size_t)w);
    }
    return;
#endif
    REAL *t = (REAL *)T;
    if (nc < VW) memset(t, 0, sizeof(QVEC) * (size_t)n);
    for (int64_t c = 0; c < nc; ++c) {
        const REAL *row = src + (c0 + c) * ld;
        for (int64_t k = 0; k < n; ++k) t[k * VW + c] = row[k];
    }
}

/* The inverse of tile_in: channels [c0, c0 + nc) of the block at dst = the n slot vectors of T. */
static inline void CAT(tile_out, SUFFIX)(REAL *restrict dst, const QVEC *restrict T, int64_t ld, int64_t n,
                                        int64_t c0, int64_t nc) {
#if defined(__AVX512F__) && VW == 16
    for (int64_t k0 = 0; k0 < n; k0 += 16) {
        const int64_t w = n - k0 < 16 ? n - k0 : 16;
        __m512 r[16];
        for (int64_t k = 0; k < 16; ++k) r[k] = k < w ? _mm512_loadu_ps((const float *)(T + k0 + k)) : _mm512_setzero_ps();
        transpose16x16_ps(r);
        for (int64_t c = 0; c < nc; ++c) _mm512_mask_storeu_ps(dst + (c0 + c) * ld + k0, first_lanes(w), r[c]);
    }
    return;
#endif
    const REAL *t = (const REAL *)T;
    for (int64_t c = 0; c < nc; ++c) {
        REAL *row = dst + (c0 + c) * ld;
        for (int64_t k = 0; k < n; ++k) row[k] = t[k * VW + c];
    }
}

/* T *= (cs[p] + i sn[p]) per pair p (conj: times the conjugate). */
static inline void CAT(cmul, SUFFIX)(QVEC *restrict T, int64_t l, const REAL *restrict cs, const REAL *restrict sn,
                                    int conj) {
    for (int64_t p = 0; p <= l; ++p) {
        const REAL c = cs[p], s = conj ? -sn[p] : sn[p];
        const QVEC re = T[2 * p], im = T[2 * p + 1];
        T[2 * p] = re * c - im * s;
        T[2 * p + 1] = re * s + im * c;
    }
}

/* out[j] = sum_k in[k] A[k * lda + j * acol], j < n_out, k < n_in (row-vector times A, or A^T with acol).
 * Four outputs at a time: four independent chains of multiply-adds instead of one waiting on itself. */
static inline void CAT(vmat, SUFFIX)(QVEC *restrict out, const QVEC *restrict in, const REAL *restrict A, int64_t lda,
                                    int64_t acol, int64_t n_in, int64_t n_out) {
    int64_t j = 0;
    for (; j + 4 <= n_out; j += 4) {
        QVEC a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        const REAL *c = A + j * acol;
        for (int64_t k = 0; k < n_in; ++k) {
            const QVEC v = in[k];
            const REAL *ck = c + k * lda;
            a0 += v * ck[0];
            a1 += v * ck[acol];
            a2 += v * ck[2 * acol];
            a3 += v * ck[3 * acol];
        }
        out[j] = a0, out[j + 1] = a1, out[j + 2] = a2, out[j + 3] = a3;
    }
    for (; j < n_out; ++j) {
        QVEC acc = {0};
        for (int64_t k = 0; k < n_in; ++k) acc += in[k] * A[k * lda + j * acol];
        out[j] = acc;
    }
}

static inline REAL CAT(lanes_sum, SUFFIX)(QVEC v) {
    REAL s = 0;
    for (int c = 0; c < VW; ++c) s += v[c];
    return s;
}

/* Gradients of <G, Z * w> w.r.t. w = (wr, wi) per pair p, per lane, added to GR[p], GI[p] (the lanes are summed
 * once per edge, not once per order and channel tile). */
static inline void CAT(phase_grad, SUFFIX)(const QVEC *restrict G, const QVEC *restrict Z, int64_t l,
                                          QVEC *restrict GR, QVEC *restrict GI) {
    for (int64_t p = 0; p <= l; ++p) {
        const QVEC zr = Z[2 * p], zi = Z[2 * p + 1], g_r = G[2 * p], g_i = G[2 * p + 1];
        GR[p] += g_r * zr + g_i * zi;
        GI[p] += g_i * zr - g_r * zi;
    }
}

/* y[e] = to_frame(x[e]). dmax: the largest d. Returns 0, or -1 if the scratch tiles could not be allocated. */
static int CAT(rot_to_frame_range, SUFFIX)(int64_t e0, int64_t e1, int64_t n_groups, const int64_t *restrict group,
                                   const REAL *restrict mats, const REAL *restrict x, int64_t ldx,
                                   const REAL *restrict cos_a, const REAL *restrict sin_a,
                                   const REAL *restrict cos_b, const REAL *restrict sin_b, int64_t ldt,
                                   REAL *restrict y, int64_t ldy, int64_t dmax) {
    QVEC *A = aligned_alloc(64, sizeof(QVEC) * (size_t)(2 * dmax + 2));
    if (!A) return -1;
    QVEC *B = A + dmax + 1;
    for (int64_t e = e0; e < e1; ++e) {
        const REAL *ca = cos_a + e * ldt, *sa = sin_a + e * ldt, *cb = cos_b + e * ldt, *sb = sin_b + e * ldt;
        for (int64_t q = 0; q < n_groups; ++q) {
            const int64_t *g = group + 8 * q;
            const int64_t l = g[0], M = g[1], d = g[2], r = g[3];
            const REAL *xe = x + e * ldx + g[4];
            REAL *ye = y + e * ldy + g[5];
            const REAL *J = mats + g[6], *JrT = mats + g[7];
            for (int64_t c0 = 0; c0 < M; c0 += VW) {
                const int64_t nc = M - c0 < VW ? M - c0 : VW;
                CAT(tile_in, SUFFIX)(A, xe, d, d, c0, nc);
                CAT(cmul, SUFFIX)(A, l, ca, sa, 0);
                CAT(vmat, SUFFIX)(B, A, J, d, 1, d, d);
                CAT(cmul, SUFFIX)(B, l, cb, sb, 0);
                CAT(vmat, SUFFIX)(A, B, JrT, r, 1, d, r);
                CAT(tile_out, SUFFIX)(ye, A, r, r, c0, nc);
            }
        }
    }
    free(A);
    return 0;
}

/* gx[e] = to_frame^T(gy[e]) (if gx is not NULL: the rotation out of the frame), and, if x is not NULL, the
 * gradients of <to_frame(x[e]), gy[e]> w.r.t. the tables, written to g_ca, g_sa, g_cb, g_sb (row stride ldg;
 * columns 0..lmax, the rest untouched), and, if xy is not NULL too, xy[e] = to_frame(x[e]) (the backward of the
 * rotation out of the frame needs both, and computing the table gradients runs half of to_frame(x) already).
 * Returns 0, or -1 if the scratch tiles could not be allocated. */
static int CAT(rot_adjoint_range, SUFFIX)(int64_t e0, int64_t e1, int64_t n_groups, const int64_t *restrict group,
                                  const REAL *restrict mats, const REAL *restrict gy, int64_t ldgy,
                                  const REAL *restrict cos_a, const REAL *restrict sin_a,
                                  const REAL *restrict cos_b, const REAL *restrict sin_b, int64_t ldt,
                                  REAL *restrict gx, int64_t ldgx, const REAL *restrict x, int64_t ldx,
                                  REAL *restrict g_ca, REAL *restrict g_sa, REAL *restrict g_cb, REAL *restrict g_sb,
                                  int64_t ldg, int64_t lmax, int64_t dmax, REAL *restrict xy, int64_t ldxy) {
    QVEC *G = aligned_alloc(64, sizeof(QVEC) * (size_t)(4 * dmax + 4 + 4 * (lmax + 1)));
    if (!G) return -1;
    QVEC *H = G + dmax + 1, *T0 = H + dmax + 1, *T2 = T0 + dmax + 1;
    QVEC *gca = T2 + dmax + 1, *gsa = gca + lmax + 1, *gcb = gsa + lmax + 1, *gsb = gcb + lmax + 1;
    for (int64_t e = e0; e < e1; ++e) {
        const REAL *ca = cos_a + e * ldt, *sa = sin_a + e * ldt, *cb = cos_b + e * ldt, *sb = sin_b + e * ldt;
        if (x) memset(gca, 0, sizeof(QVEC) * (size_t)(4 * (lmax + 1)));
        for (int64_t q = 0; q < n_groups; ++q) {
            const int64_t *g = group + 8 * q;
            const int64_t l = g[0], M = g[1], d = g[2], r = g[3];
            const REAL *gye = gy + e * ldgy + g[5];
            const REAL *J = mats + g[6], *JrT = mats + g[7];
            for (int64_t c0 = 0; c0 < M; c0 += VW) {
                const int64_t nc = M - c0 < VW ? M - c0 : VW;
                CAT(tile_in, SUFFIX)(H, gye, r, r, c0, nc);
                CAT(vmat, SUFFIX)(G, H, JrT, 1, r, r, d); /* G = gradient w.r.t. (x * pa) @ J * pb */
                if (x) {                                  /* forward up to the second phase, for its gradient */
                    CAT(tile_in, SUFFIX)(T0, x + e * ldx + g[4], d, d, c0, nc);
                    memcpy(H, T0, sizeof(QVEC) * (size_t)d);
                    CAT(cmul, SUFFIX)(H, l, ca, sa, 0);
                    CAT(vmat, SUFFIX)(T2, H, J, d, 1, d, d);
                    CAT(phase_grad, SUFFIX)(G, T2, l, gcb, gsb);
                    if (xy) { /* the rest of to_frame(x), whose first half is T2 */
                        memcpy(H, T2, sizeof(QVEC) * (size_t)d);
                        CAT(cmul, SUFFIX)(H, l, cb, sb, 0);
                        CAT(vmat, SUFFIX)(T2, H, JrT, r, 1, d, r);
                        CAT(tile_out, SUFFIX)(xy + e * ldxy + g[5], T2, r, r, c0, nc);
                    }
                }
                CAT(cmul, SUFFIX)(G, l, cb, sb, 1);
                CAT(vmat, SUFFIX)(H, G, J, 1, d, d, d); /* times J^T */
                if (x) CAT(phase_grad, SUFFIX)(H, T0, l, gca, gsa);
                if (gx) {
                    CAT(cmul, SUFFIX)(H, l, ca, sa, 1);
                    CAT(tile_out, SUFFIX)(gx + e * ldgx + g[4], H, d, d, c0, nc);
                }
            }
        }
        if (x)
            for (int64_t p = 0; p <= lmax; ++p) {
                g_ca[e * ldg + p] = CAT(lanes_sum, SUFFIX)(gca[p]);
                g_sa[e * ldg + p] = CAT(lanes_sum, SUFFIX)(gsa[p]);
                g_cb[e * ldg + p] = CAT(lanes_sum, SUFFIX)(gcb[p]);
                g_sb[e * ldg + p] = CAT(lanes_sum, SUFFIX)(gsb[p]);
            }
    }
    free(G);
    return 0;
}

/* The exported kernels: the ranges above split over nthreads threads (with OpenMP; else one call). */
int CAT(escn_rot_to_frame, SUFFIX)(int64_t e0, int64_t e1, int64_t n_groups, const int64_t *restrict group,
                                   const REAL *restrict mats, const REAL *restrict x, int64_t ldx,
                                   const REAL *restrict cos_a, const REAL *restrict sin_a,
                                   const REAL *restrict cos_b, const REAL *restrict sin_b, int64_t ldt,
                                   REAL *restrict y, int64_t ldy, int64_t dmax, int64_t nthreads) {
    SPLIT_OVER_THREADS(CAT(rot_to_frame_range, SUFFIX)(r0, r1, n_groups, group, mats, x, ldx, cos_a, sin_a,
                       cos_b, sin_b, ldt, y, ldy, dmax))
}

int CAT(escn_rot_adjoint, SUFFIX)(int64_t e0, int64_t e1, int64_t n_groups, const int64_t *restrict group,
                                  const REAL *restrict mats, const REAL *restrict gy, int64_t ldgy,
                                  const REAL *restrict cos_a, const REAL *restrict sin_a,
                                  const REAL *restrict cos_b, const REAL *restrict sin_b, int64_t ldt,
                                  REAL *restrict gx, int64_t ldgx, const REAL *restrict x, int64_t ldx,
                                  REAL *restrict g_ca, REAL *restrict g_sa, REAL *restrict g_cb, REAL *restrict g_sb,
                                  int64_t ldg, int64_t lmax, int64_t dmax, REAL *restrict xy, int64_t ldxy,
                                  int64_t nthreads) {
    SPLIT_OVER_THREADS(CAT(rot_adjoint_range, SUFFIX)(r0, r1, n_groups, group, mats, gy, ldgy, cos_a, sin_a,
                       cos_b, sin_b, ldt, gx, ldgx, x, ldx, g_ca, g_sa, g_cb, g_sb, ldg, lmax, dmax, xy, ldxy))
}

#undef QVEC
