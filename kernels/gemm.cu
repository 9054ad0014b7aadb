// Prompt products on the tensor cores (W8A16): Y = X · Wᵀ for many tokens, W int8 with per-row fp32 scales (or bf16),
// in the tiled layout of mma.cuh, X fp16 rows, fp32 accumulation. This replaces dequantising every weight to fp16 for
// cuBLAS (≈ 140 GB of extra traffic per 512-token prompt at the 8x7B shape): weights are read once, as int8.
//
// A block is GEMM_WARPS warps over 64 tokens; each warp owns two 16-row m-tiles (32 rows) and all 8 token tiles.
// Per 64-column unit: the block's token slice (64 × 64 fp16) comes into shared memory by cp.async, GEMM_STAGES
// deep; each warp's weights come straight from global memory into registers (a tiled unit is 512 contiguous bytes
// per load), one unit ahead; the conversion and the 64 mma of a unit are mma.cuh's.
//
// Epilogues: dense y[t, r] (+)= s·v; experts: gate/up → fp16 silu(gate)·up per routed (token, choice), and down →
// the weighted output per (token, choice) (the next norm adds a token's K rows to its residual, as in decode).
#include "mma.cuh"

#define GEMM_WARPS 8
#define GEMM_TOKENS 64
#define GEMM_STAGES 3
#ifndef GEMM_MIN_BLOCKS
#define GEMM_MIN_BLOCKS 2 // blocks per SM the register budget must allow: 2 (128 registers, a few spilled) took a
                          // 512-token prompt's experts from 2.22 to 1.64 ms a layer on an H100 (the harness, same run)
#endif

// Shared-memory row stride of the token slice, bytes: int8 units carry 64 columns (128 bytes) per token and lanes
// read 32 bytes at 32·q of row g, so 144 puts rows g and g+1 on different banks; bf16 units carry 32 columns
// (64 bytes) and lanes read 16 bytes at 16·q, so unpadded rows are conflict-free.
#define XS_STRIDE(INT8) ((INT8) ? 144 : 64)

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// The main loop: acc[m][n] for this warp's m-tiles (pg/pg8 from tile_pointers) and the block's 64 tokens, whose
// fp16 rows (length C) are xrow for this thread's token (threadIdx.x / 4; any valid row past the last token).
template <bool INT8>
__device__ __forceinline__ void gemm_mainloop(const char* const (&pg)[2], const char* const (&pg8)[2], const f16_t* xrow,
                                              int C, float (&acc)[2][8][4]) {
    constexpr int S = XS_STRIDE(INT8), ucols = UNIT_COLS(INT8), per_thread = INT8 ? 2 : 1; // 16-byte pieces per thread per unit
    __shared__ __align__(16) char xs[GEMM_STAGES][GEMM_TOKENS * S];
    const int lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int tok = threadIdx.x >> 2, piece = (threadIdx.x & 3) * per_thread;
    const int units = C / ucols;
    auto load_x = [&](int u, int stage) {
#pragma unroll
        for (int p = 0; p < per_thread; p++)
            cp_async16(&xs[stage][tok * S + (piece + p) * 16], xrow + (size_t)u * ucols + (piece + p) * 8);
    };
#pragma unroll
    for (int s = 0; s < GEMM_STAGES - 1; s++) {
        if (s < units) load_x(s, s);
        cp_async_commit();
    }
    int4 wc[2], wc8[2], wn[2], wn8[2];
#pragma unroll
    for (int m = 0; m < 2; m++) { wc[m] = load_weights(pg[m]); wc8[m] = load_weights(pg8[m]); }
    for (int u = 0; u < units; u++) {
        cp_async_wait<GEMM_STAGES - 2>();
        __syncthreads(); // unit u's slice is in; every warp is done with the stage about to be refilled
        if (u + GEMM_STAGES - 1 < units) load_x(u + GEMM_STAGES - 1, (u + GEMM_STAGES - 1) % GEMM_STAGES);
        cp_async_commit();
        const int un = u + 1 < units ? u + 1 : u;
#pragma unroll
        for (int m = 0; m < 2; m++) {
            wn[m] = load_weights(pg[m] + (size_t)un * UNIT_STRIDE);
            wn8[m] = load_weights(pg8[m] + (size_t)un * UNIT_STRIDE);
        }
        const char* xst = xs[u % GEMM_STAGES] + g * S + q * 16 * per_thread;
        // the token slice in two halves (16 bytes per token tile each), so only 32 registers of it are live
#pragma unroll
        for (int hh = 0; hh < per_thread; hh++) {
            int4 xh[8];
#pragma unroll
            for (int n = 0; n < 8; n++) xh[n] = reinterpret_cast<const int4*>(xst + 8 * n * S)[hh];
#pragma unroll
            for (int jj = 0; jj < 2; jj++) {
                const int j = 2 * hh + jj; // mma j of the unit (mma.cuh's k mapping)
                unsigned a0[2], a1[2], a2[2], a3[2];
#pragma unroll
                for (int m = 0; m < 2; m++) a_fragment<INT8>(wc[m], wc8[m], j, a0[m], a1[m], a2[m], a3[m]);
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    const unsigned b0 = word_of(xh[n], 2 * jj), b1 = word_of(xh[n], 2 * jj + 1);
#pragma unroll
                    for (int m = 0; m < 2; m++) mma_f16(acc[m][n], a0[m], a1[m], a2[m], a3[m], b0, b1);
                }
            }
        }
#pragma unroll
        for (int m = 0; m < 2; m++) { wc[m] = wn[m]; wc8[m] = wn8[m]; }
    }
    cp_async_wait<0>();
}

// Dense: y[t, r] (+)= scale[r] · Σ_c W[r, c] x[t, c], T tokens, R rows (a multiple of 16). grid (ceil(R / 256), ceil(T / 64)).
template <bool INT8>
__device__ __forceinline__ void gemm_dense(const char* W, const float* scales, const f16_t* x, float* y, int T, int R, int C, int accumulate) {
    const int warp = threadIdx.x >> 5;
    const int t0 = blockIdx.y * GEMM_TOKENS;
    const int r0 = blockIdx.x * GEMM_WARPS * 32 + warp * 32;
    const int esize = INT8 ? 1 : 2;
    const char* pg[2];
    const char* pg8[2];
    // warps past the last row read the last tile again and store nothing
    tile_pointers(W, min(r0, R - 16), C, esize, pg[0], pg8[0]);
    tile_pointers(W, min(r0 + 16, R - 16), C, esize, pg[1], pg8[1]);
    const f16_t* xrow = x + (size_t)min(t0 + (int)(threadIdx.x >> 2), T - 1) * C;
    float acc[2][8][4] = {};
    gemm_mainloop<INT8>(pg, pg8, xrow, C, acc);
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int r = r0 + 16 * m + frag_row(i), t = t0 + 8 * n + frag_token(i);
                if (r >= R || t >= T) continue;
                float v = acc[m][n][i];
                if (scales) v *= scales[r];
                float* dst = y + (size_t)t * R + r;
                *dst = accumulate ? *dst + v : v;
            }
}

// Experts of a prompt, grouped on the device (moe_group in moe.cu): tiles[3·y] = (expert, first slot, count ≤ 64) for
// block row y < *tile_count; slots[i] = the (token, choice) pair p = t·K + k at sorted position i.
// The tile is blockIdx.x, so the blocks that run together are the tiles of one row block: an expert's 2-3 token tiles
// read its weights at about the same time, once from DRAM (ncu had shown 43 % L2 hits and 2 TB/s of re-reads).
// gate/up: h[i, r] = fp16(silu(s·W1_e[r]·x_t) · s·W3_e[r]·x_t) for the pair at position i. grid (max tiles, ceil(I / 128)).
template <bool INT8>
__device__ __forceinline__ void gemm_gate_up(const char* W, const float* scales, const int* tiles, const int* tile_count, const int* slots,
                                             const f16_t* x, f16_t* h, int I, int H, int K) {
    if ((int)blockIdx.x >= *tile_count) return;
    const int e = tiles[3 * blockIdx.x], first = tiles[3 * blockIdx.x + 1], n = tiles[3 * blockIdx.x + 2];
    const int warp = threadIdx.x >> 5, esize = INT8 ? 1 : 2;
    const int r0 = blockIdx.y * GEMM_WARPS * 16 + warp * 16; // 16 gate rows and the 16 matching up rows
    const char* base = W + (size_t)e * 2 * I * H * esize;
    const char* pg[2];
    const char* pg8[2];
    // warps past the last row (I not a multiple of 128) read the last tile again and store nothing
    tile_pointers(base, min(r0, I - 16), H, esize, pg[0], pg8[0]);
    tile_pointers(base, I + min(r0, I - 16), H, esize, pg[1], pg8[1]);
    const f16_t* xrow = x + (size_t)(slots[first + min((int)(threadIdx.x >> 2), n - 1)] / K) * H;
    float acc[2][8][4] = {};
    gemm_mainloop<INT8>(pg, pg8, xrow, H, acc);
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = r0 + frag_row(i), slot = 8 * j + frag_token(i);
            if (slot >= n || r >= I) continue;
            float a = acc[0][j][i], b = acc[1][j][i];
            if (INT8) { a *= scales[(size_t)e * 2 * I + r]; b *= scales[(size_t)e * 2 * I + I + r]; }
            h[(size_t)(first + slot) * I + r] = f32_to_f16(silu_mul(a, b));
        }
}

// down: out[p, r] = w[p] · s · W2_e[r] · h[i] for the pair p = slots[i]. grid (max tiles, ceil(H / 256)).
template <bool INT8>
__device__ __forceinline__ void gemm_down(const char* W, const float* scales, const int* tiles, const int* tile_count, const int* slots,
                                          const float* expert_w, const f16_t* h, float* out, int H, int I) {
    if ((int)blockIdx.x >= *tile_count) return;
    const int e = tiles[3 * blockIdx.x], first = tiles[3 * blockIdx.x + 1], n = tiles[3 * blockIdx.x + 2];
    const int warp = threadIdx.x >> 5, esize = INT8 ? 1 : 2;
    const int r0 = blockIdx.y * GEMM_WARPS * 32 + warp * 32;
    const char* base = W + (size_t)e * H * I * esize;
    const char* pg[2];
    const char* pg8[2];
    tile_pointers(base, min(r0, H - 16), I, esize, pg[0], pg8[0]);
    tile_pointers(base, min(r0 + 16, H - 16), I, esize, pg[1], pg8[1]);
    const f16_t* xrow = h + (size_t)(first + min((int)(threadIdx.x >> 2), n - 1)) * I;
    float acc[2][8][4] = {};
    gemm_mainloop<INT8>(pg, pg8, xrow, I, acc);
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int r = r0 + 16 * m + frag_row(i), slot = 8 * j + frag_token(i);
                if (slot >= n || r >= H) continue;
                const int p = slots[first + slot];
                float v = acc[m][j][i] * expert_w[p];
                if (INT8) v *= scales[(size_t)e * H + r];
                out[(size_t)p * H + r] = v;
            }
}

#define GEMM_KERNELS(KIND, INT8, WT) \
extern "C" __global__ void __launch_bounds__(GEMM_WARPS * 32, GEMM_MIN_BLOCKS) gemm_##KIND(const WT* W, const float* scales, const f16_t* x, float* y, \
    int T, int R, int C, int accumulate) \
{ gemm_dense<INT8>(reinterpret_cast<const char*>(W), scales, x, y, T, R, C, accumulate); } \
extern "C" __global__ void __launch_bounds__(GEMM_WARPS * 32, GEMM_MIN_BLOCKS) moe_gemm_gate_up_##KIND(const WT* W, const float* scales, \
    const int* tiles, const int* tile_count, const int* slots, const f16_t* x, f16_t* h, int I, int H, int K) \
{ gemm_gate_up<INT8>(reinterpret_cast<const char*>(W), scales, tiles, tile_count, slots, x, h, I, H, K); } \
extern "C" __global__ void __launch_bounds__(GEMM_WARPS * 32, GEMM_MIN_BLOCKS) moe_gemm_down_##KIND(const WT* W, const float* scales, \
    const int* tiles, const int* tile_count, const int* slots, const float* expert_w, const f16_t* h, float* out, int H, int I) \
{ gemm_down<INT8>(reinterpret_cast<const char*>(W), scales, tiles, tile_count, slots, expert_w, h, out, H, I); }

GEMM_KERNELS(i8, true, signed char)
GEMM_KERNELS(bf16, false, bf16_t)
