// Decode matrix-vector products: y[t, r] (+)= scale[r] · Σ_c W[r, c] · x[t, c] for NT ≤ 8 tokens.
// W is int8 (per-row fp32 scale) or bf16 (no scale), row-major [R, C], C a multiple of 16 (int8) / 8 (bf16).
//
// A block of GEMV_WARPS warps computes GEMV_ROWS_FOR(NT) rows; the warps split the row length between them (each lane
// keeps GEMV_ROWS 16-byte weight loads in flight), then add their partial sums in shared memory. Every weight
// is read once per step whatever the batch — decode is bound by memory bandwidth — and even a 4096-row matrix
// gives 512 blocks, enough warps in flight to cover memory latency.
#include "common.cuh"

#define GEMV_WARPS 8
// rows per block: fewer as the batch grows, so that NT × rows accumulators stay in registers with room to spare
#define GEMV_ROWS_FOR(NT) ((NT) <= 2 ? 8 : (NT) <= 4 ? 4 : 2)

template <int NT, bool INT8>
__device__ __forceinline__ void gemv_body(const void* W, const float* scales, const float* x, float* y,
                                          int R, int C, int accumulate) {
    constexpr int GEMV_ROWS = GEMV_ROWS_FOR(NT);
    __shared__ float part[GEMV_WARPS][NT][GEMV_ROWS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row0 = blockIdx.x * GEMV_ROWS;
    const int per16 = INT8 ? 16 : 8;                 // weights per 16-byte load
    const int chunks = C / per16;
    const int slice = (chunks + GEMV_WARPS - 1) / GEMV_WARPS;
    const int c0 = warp * slice, c1 = min(chunks, c0 + slice);
    const size_t row_bytes = (size_t)C * (INT8 ? 1 : 2);
    const char* base = reinterpret_cast<const char*>(W);
    const int4* w[GEMV_ROWS];
#pragma unroll
    for (int k = 0; k < GEMV_ROWS; k++)
        w[k] = reinterpret_cast<const int4*>(base + (size_t)min(row0 + k, R - 1) * row_bytes);
    float acc[NT][GEMV_ROWS];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int k = 0; k < GEMV_ROWS; k++) acc[t][k] = 0.f;
    for (int i = c0 + lane; i < c1; i += 32) {
        int4 wv[GEMV_ROWS];
#pragma unroll
        for (int k = 0; k < GEMV_ROWS; k++) wv[k] = __ldg(w[k] + i);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float4* xv = reinterpret_cast<const float4*>(x + (size_t)t * C + (size_t)i * per16);
#pragma unroll
            for (int k = 0; k < GEMV_ROWS; k++) acc[t][k] += INT8 ? dot16_i8(wv[k], xv) : dot8_bf16(wv[k], xv);
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int k = 0; k < GEMV_ROWS; k++) {
            const float v = warp_sum(acc[t][k]);
            if (lane == 0) part[warp][t][k] = v;
        }
    __syncthreads();
    for (int idx = threadIdx.x; idx < NT * GEMV_ROWS; idx += blockDim.x) {
        const int t = idx / GEMV_ROWS, k = idx % GEMV_ROWS, row = row0 + k;
        if (row >= R) continue;
        float v = 0.f;
#pragma unroll
        for (int q = 0; q < GEMV_WARPS; q++) v += part[q][t][k];
        if (scales) v *= scales[row];
        float* dst = y + (size_t)t * R + row;
        *dst = accumulate ? *dst + v : v;
    }
}

#define GEMV_KERNELS(NT) \
extern "C" __global__ void gemv_i8_##NT(const signed char* W, const float* scales, const float* x, float* y, int R, int C, int accumulate) \
{ gemv_body<NT, true>(W, scales, x, y, R, C, accumulate); } \
extern "C" __global__ void gemv_bf16_##NT(const bf16_t* W, const float* scales, const float* x, float* y, int R, int C, int accumulate) \
{ gemv_body<NT, false>(W, nullptr, x, y, R, C, accumulate); }

GEMV_KERNELS(1)
GEMV_KERNELS(2)
GEMV_KERNELS(3)
GEMV_KERNELS(4)
GEMV_KERNELS(5)
GEMV_KERNELS(6)
GEMV_KERNELS(7)
GEMV_KERNELS(8)
