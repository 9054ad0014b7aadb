// Shared helpers for the OrleansMixtral kernels. Compiled with NVRTC at start-up (no CUDA headers needed):
// bf16 is carried as its 16-bit pattern (unsigned short), exactly the layout cuBLAS and safetensors use.
#pragma once

typedef unsigned short bf16_t;

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ float bf16_to_f32(bf16_t b) { return __uint_as_float(((unsigned)b) << 16); }

// round to nearest even, as torch does
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return (bf16_t)((u >> 16) | ((u & 0xffff) ? 0x40 : 0)); // inf / nan
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

typedef unsigned short f16_t;

// fp32 → fp16, round to nearest even (prefill GEMM operands: 11 significant bits against bf16's 8)
__device__ __forceinline__ f16_t f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float f16_to_f32(f16_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The RMSNorm scale 1 / sqrt(mean(v²) + eps) of a row whose squares this thread summed into ss, for the whole block
// (any number of warps ≤ 32); partial: 32 floats of shared memory. Call from all threads.
__device__ __forceinline__ float block_rms_scale(float ss, float* partial, int H, float eps) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    ss = warp_sum(ss);
    if (lane == 0) partial[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        float u = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.f;
        u = warp_sum(u);
        if (lane == 0) partial[0] = rsqrtf(u / H + eps);
    }
    __syncthreads();
    return partial[0];
}

// SiLU(gate) · up, the experts' activation (transformers' MixtralBlockSparseTop2MLP)
__device__ __forceinline__ float silu_mul(float gate, float up) { return gate / (1.f + expf(-gate)) * up; }
