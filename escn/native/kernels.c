/* escn's compiled kernels (see escn/native/build.py), one translation unit: each kernel body is instantiated
 * for float (suffix _f32, 16 lanes per 64-byte vector) and double (suffix _f64, 8 lanes).
 *   tfn_frame_map.h  the edge-frame map of TFN-layout per-edge weights (escn/native/tfn_kernel.py)
 *   edge_rotation.h  the rotation into and out of the edge frame (escn/native/rotation_kernel.py) */
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
#include "tfn_frame_map.h"
#include "edge_rotation.h"
#undef REAL
#undef SUFFIX
#undef VW

#define REAL double
#define SUFFIX _f64
#define VW 8
#include "tfn_frame_map.h"
#include "edge_rotation.h"
#undef REAL
#undef SUFFIX
#undef VW
