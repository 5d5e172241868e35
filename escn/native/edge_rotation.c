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
 * processed. Compiled for float (_f32) and double (_f64). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

#define REAL float
#define SUFFIX _f32
#define VW 16
#include "edge_rotation_body.h"
#undef REAL
#undef SUFFIX
#undef VW

#define REAL double
#define SUFFIX _f64
#define VW 8
#include "edge_rotation_body.h"
#undef REAL
#undef SUFFIX
#undef VW
