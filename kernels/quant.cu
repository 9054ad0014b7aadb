// Weight preparation on the device: int8 → fp16 dequantisation (prefill GEMMs through cuBLAS) and the
// synthetic weights of `--model synthetic:…` (generated in place, never through host memory).
#include "common.cuh"

// out[i] = fp16(W[i] · scales[i / C]), 16 weights per thread and step (16-byte loads, 2 × 16-byte stores).
// n and C multiples of 16. grid-stride.
extern "C" __global__ void dequant_i8_f16(const signed char* W, const float* scales, f16_t* out, long n, int C) {
    const long chunks = n / 16;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < chunks; i += (long)gridDim.x * blockDim.x) {
        const int4 w = __ldg(reinterpret_cast<const int4*>(W) + i);
        const signed char* b = reinterpret_cast<const signed char*>(&w);
        const float s = scales[(i * 16) / C];
        unsigned packed[8];
#pragma unroll
        for (int k = 0; k < 8; k++)
            packed[k] = (unsigned)f32_to_f16(b[2 * k] * s) | ((unsigned)f32_to_f16(b[2 * k + 1] * s) << 16);
        int4* dst = reinterpret_cast<int4*>(out) + 2 * i;
        dst[0] = make_int4(packed[0], packed[1], packed[2], packed[3]);
        dst[1] = make_int4(packed[4], packed[5], packed[6], packed[7]);
    }
}

// bf16 weights → fp16 for the prefill GEMMs (exact for weights in fp16's normal range). grid-stride.
extern "C" __global__ void bf16_to_f16(const bf16_t* W, f16_t* out, long n) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = f32_to_f16(bf16_to_f32(W[i]));
}

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform int8 in [-127, 127] from a counter-based hash: any element is reproducible from (seed, index).
extern "C" __global__ void fill_random_i8(signed char* W, long n, unsigned long long seed) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        W[i] = (signed char)((int)(mix64(seed * 0x9E3779B97F4A7C15ull + (unsigned long long)i) % 255ull) - 127);
}

// Uniform in [-scale, scale], as bf16 or fp32.
extern "C" __global__ void fill_random_bf16(bf16_t* W, long n, unsigned long long seed, float scale) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float u = (mix64(seed * 0x9E3779B97F4A7C15ull + (unsigned long long)i) >> 40) * (1.f / 16777216.f);
        W[i] = f32_to_bf16((2.f * u - 1.f) * scale);
    }
}

extern "C" __global__ void fill_random_f32(float* W, long n, unsigned long long seed, float low, float high) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float u = (mix64(seed * 0x9E3779B97F4A7C15ull + (unsigned long long)i) >> 40) * (1.f / 16777216.f);
        W[i] = low + u * (high - low);
    }
}
