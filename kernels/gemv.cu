// Decode products ("skinny" GEMM): y[t, r] (+)= scale[r] · Σ_c W[r, c] · x[t, c] for T ≤ 8·NT tokens, on the
// tensor cores (mma.h): int8 weights with per-row fp32 scales (or bf16 weights, scales null), fp16
// activations x [T, C], fp32 out y [T, R]. R a multiple of 16, C of 64; weights in the tiled layout (mma.cuh).
//
// Decode is bound by reading the weights: every weight is read once per step whatever the batch, straight from
// global memory into registers (16-byte loads, UNROLL units in flight per lane), converted to fp16 in registers
// (mma.cuh), and multiplied by the tensor cores, so the int→float conversion unit and the FMA pipe stay idle.
// A block is SPLIT warps on one 16-row tile; they split the row length and add their fragments in shared
// memory: a 4096-row matrix still gives 256 blocks × 8 warps.
#include "mma.cuh"

#ifndef GEMV_SPLIT
#define GEMV_SPLIT 8
#endif
// units in flight per lane: fewer as the batch grows (each unit holds 2 + 2·NT 16-byte loads in registers)
#define GEMV_UNROLL(NT) ((NT) == 1 ? 4 : (NT) == 2 ? 2 : 1)

template <int NT, bool INT8>
__device__ __forceinline__ void gemv_body(const char* W, const float* scales, const f16_t* x, float* y, int T, int R, int C, int accumulate) {
    __shared__ float red[GEMV_SPLIT / 2 * NT * 128];
    const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2;
    const int r0 = blockIdx.x * 16;
    const char* wg[1];
    const char* wg8[1];
    tile_pointers(W, r0, C, INT8 ? 1 : 2, wg[0], wg8[0]);
    const f16_t* xr[NT];
#pragma unroll
    for (int n = 0; n < NT; n++) xr[n] = x + (size_t)min(8 * n + g, T - 1) * C; // rows past T: any valid row, result dropped
    const int units = C / UNIT_COLS(INT8);
    const int per = (units + GEMV_SPLIT - 1) / GEMV_SPLIT;
    const int u0 = min(units, warp * per), u1 = min(units, u0 + per);
    float acc[1][NT][4] = {};
    skinny_warp<1, NT, INT8, GEMV_UNROLL(NT)>(wg, wg8, xr, u0, u1, acc);
    reduce_split<1, NT, GEMV_SPLIT>(acc, red);
    if (warp != 0) return;
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int row = r0 + frag_row(i), t = 8 * n + frag_token(i);
            if (row >= R || t >= T) continue;
            float v = acc[0][n][i];
            if (scales) v *= scales[row];
            float* dst = y + (size_t)t * R + row;
            *dst = accumulate ? *dst + v : v;
        }
}

#define GEMV_KERNELS(NT) \
extern "C" __global__ void __launch_bounds__(GEMV_SPLIT * 32) gemv_i8_nt##NT(const signed char* W, const float* scales, const f16_t* x, float* y, int T, int R, int C, int accumulate) \
{ gemv_body<NT, true>(reinterpret_cast<const char*>(W), scales, x, y, T, R, C, accumulate); } \
extern "C" __global__ void __launch_bounds__(GEMV_SPLIT * 32) gemv_bf16_nt##NT(const bf16_t* W, const float* scales, const f16_t* x, float* y, int T, int R, int C, int accumulate) \
{ gemv_body<NT, false>(reinterpret_cast<const char*>(W), nullptr, x, y, T, R, C, accumulate); }

GEMV_KERNELS(1)
GEMV_KERNELS(2)
GEMV_KERNELS(4)
GEMV_KERNELS(8)
