// Weight preparation on the device: the tiled layout the products read, its dequantisation to row-major fp16 (for
// the harness), and the synthetic weights of `--model synthetic:…` (generated in place, never through host memory).
#include "common.cuh"

// The tiled weight layout of mma.cuh, as 16-byte pieces: piece c (0 .. C·esize/16) of row r sits at
//   ((r/16 · U + c/4) · 2 + (r%16)/8) · 32 + (r%8) · 4 + c%4,   U = pieces per row / 4.
__device__ __forceinline__ long tiled_piece(long r, long c, long pieces_per_row) {
    const long units = pieces_per_row / 4;
    return (((r >> 4) * units + (c >> 2)) * 2 + ((r >> 3) & 1)) * 32 + (r & 7) * 4 + (c & 3);
}

// The inverse: the row and 16-byte piece of tiled piece i.
__device__ __forceinline__ void tiled_row_piece(long i, long pieces_per_row, long& r, long& c) {
    const long q = i & 3, g = (i >> 2) & 7, half = (i >> 5) & 1, tu = i >> 6, units = pieces_per_row / 4;
    r = (tu / units) * 16 + half * 8 + g;
    c = (tu % units) * 4 + q;
}

// Row-major [rows, row_bytes] → the tiled layout (rows a multiple of 16, row_bytes of 64). Whole 16-row tiles map to
// themselves, so any tile-aligned run of rows (one expert, one projection) can be tiled on its own. grid-stride.
extern "C" __global__ void tile_rows_16(const int4* src, int4* dst, long rows, long row_bytes) {
    const long per_row = row_bytes / 16, n = rows * per_row;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        dst[tiled_piece(i / per_row, i % per_row, per_row)] = src[i];
}

// Tiled int8 W [n / C, C] → row-major fp16 out[r, c] = W[r, c] · scales[r] (the harness's dequantise + cuBLAS
// comparison, and its check of the layout). Each
// thread reads one 16-byte piece (16 weights, in the tiled order: sequential reads) and writes 32 bytes. grid-stride.
extern "C" __global__ void dequant_i8_f16(const signed char* W, const float* scales, f16_t* out, long n, int C) {
    const long per_row = C / 16, chunks = n / 16;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < chunks; i += (long)gridDim.x * blockDim.x) {
        long r, c;
        tiled_row_piece(i, per_row, r, c);
        const int4 w = __ldg(reinterpret_cast<const int4*>(W) + i);
        const signed char* b = reinterpret_cast<const signed char*>(&w);
        const float s = scales[r];
        unsigned packed[8];
#pragma unroll
        for (int k = 0; k < 8; k++)
            packed[k] = (unsigned)f32_to_f16(b[2 * k] * s) | ((unsigned)f32_to_f16(b[2 * k + 1] * s) << 16);
        int4* dst = reinterpret_cast<int4*>(out + r * C + c * 16);
        dst[0] = make_int4(packed[0], packed[1], packed[2], packed[3]);
        dst[1] = make_int4(packed[4], packed[5], packed[6], packed[7]);
    }
}

// Tiled bf16 W [n / C, C] → row-major fp16 (exact for weights in fp16's normal range). grid-stride over 16-byte pieces.
extern "C" __global__ void bf16_to_f16(const bf16_t* W, f16_t* out, long n, int C) {
    const long per_row = C / 8, chunks = n / 8;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < chunks; i += (long)gridDim.x * blockDim.x) {
        long r, c;
        tiled_row_piece(i, per_row, r, c);
        const int4 w = __ldg(reinterpret_cast<const int4*>(W) + i);
        const unsigned* u = reinterpret_cast<const unsigned*>(&w);
        unsigned packed[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            packed[k] = (unsigned)f32_to_f16(__uint_as_float(u[k] << 16)) | ((unsigned)f32_to_f16(__uint_as_float(u[k] & 0xffff0000u)) << 16);
        *reinterpret_cast<int4*>(out + r * C + c * 8) = make_int4(packed[0], packed[1], packed[2], packed[3]);
    }
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
