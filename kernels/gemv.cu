// Decode matrix-vector products: y[t, r] (+)= scale[r] · Σ_c W[r, c] · x[t, c] for NT ≤ 8 tokens.
// W is int8 (per-row fp32 scale) or bf16 (no scale), row-major [R, C], C a multiple of 16 (int8) / 8 (bf16).
// One warp computes GEMV_ROWS rows: each 16-byte weight load is used for every token, and each activation
// load for GEMV_ROWS rows, so the weights stream from memory once per step whatever the batch — what bounds
// decode is memory bandwidth.
#include "common.cuh"

#define GEMV_WARPS 8
#define GEMV_ROWS 4

template <int NT, bool INT8>
__device__ __forceinline__ void gemv_body(const void* W, const float* scales, const float* x, float* y,
                                          int R, int C, int accumulate) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    if (row0 >= R) return;
    const int per16 = INT8 ? 16 : 8;                 // weights per 16-byte load
    const int chunks = C / per16;
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
#pragma unroll 2
    for (int i = lane; i < chunks; i += 32) {
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
    for (int k = 0; k < GEMV_ROWS; k++) {
        const int row = row0 + k;
        const float s = scales && row < R ? scales[row] : 1.f;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = warp_sum(acc[t][k]) * s;
            if (lane == 0 && row < R) {
                float* dst = y + (size_t)t * R + row;
                *dst = accumulate ? *dst + v : v;
            }
        }
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
