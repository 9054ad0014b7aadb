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

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// 16 int8 weights (one 16-byte load) dotted with 16 fp32 activations
__device__ __forceinline__ float dot16_i8(int4 w, const float4* x) {
    const signed char* b = reinterpret_cast<const signed char*>(&w);
    float4 x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
    return b[0] * x0.x + b[1] * x0.y + b[2] * x0.z + b[3] * x0.w
         + b[4] * x1.x + b[5] * x1.y + b[6] * x1.z + b[7] * x1.w
         + b[8] * x2.x + b[9] * x2.y + b[10] * x2.z + b[11] * x2.w
         + b[12] * x3.x + b[13] * x3.y + b[14] * x3.z + b[15] * x3.w;
}

// 8 bf16 weights (one 16-byte load) dotted with 8 fp32 activations
__device__ __forceinline__ float dot8_bf16(int4 w, const float4* x) {
    const unsigned* u = reinterpret_cast<const unsigned*>(&w);
    float4 x0 = x[0], x1 = x[1];
    return __uint_as_float(u[0] << 16) * x0.x + __uint_as_float(u[0] & 0xffff0000u) * x0.y
         + __uint_as_float(u[1] << 16) * x0.z + __uint_as_float(u[1] & 0xffff0000u) * x0.w
         + __uint_as_float(u[2] << 16) * x1.x + __uint_as_float(u[2] & 0xffff0000u) * x1.y
         + __uint_as_float(u[3] << 16) * x1.z + __uint_as_float(u[3] & 0xffff0000u) * x1.w;
}
