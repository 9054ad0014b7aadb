// Mixture of experts on the device: routing, and the experts of decode steps. Expert ids stay in device
// memory (no host round trip per layer), so a decode step is CUDA-graph safe.
//
// Expert weights are stored per layer as [E, 2I, H] (w1 rows then w3 rows: gate and up fused) and
// [E, H, I] (w2), int8 with per-row scales [E, 2I] / [E, H], or bf16 with null scales; each in the tiled layout of
// mma.cuh (16-row tiles never straddle experts: 2I and H are multiples of 16).
//
// Decode experts are grouped: a block works for one expert the step uses and carries every token routed to it,
// so each chosen expert's weights are read once per step however many tokens share it. Products run on the
// tensor cores through mma.cuh (fp16 activations, fp32 accumulation).
#include "mma.cuh"

#ifndef MOE_SPLIT
#define MOE_SPLIT 8      // warps per block, splitting the row length
#endif
#ifndef MOE_UNROLL
#define MOE_UNROLL 2     // units in flight per lane at NT = 1 (gate_up: 4 rows per unit; down: twice this)
#endif
#define MAX_EXPERTS 64
#define MAX_PAIRS 512

// out[t] = fp16(x[t] · w / sqrt(mean(x[t]²) + eps)), and the router on the fp32 normalised row: softmax over all
// experts, keep the top k, renormalise (Hugging Face Mixtral). Each thread holds its RN_VEC float4 of the row and,
// loaded first (they do not depend on x), the matching float4 of 8 experts' gate rows at a time: one memory latency
// for the whole router instead of one per unrolled step of a warp-per-expert loop (7.7 µs a token on an H100).
// grid T, block 256; H a multiple of 4, ≤ 4 · 256 · RN_VEC.
#define RN_VEC 4
extern "C" __global__ void __launch_bounds__(256) rmsnorm_router(const float* x, const float* w, f16_t* out, const float* gate,
                                                                int* expert_ids, float* expert_w, int H, float eps, int E, int K) {
    __shared__ float partial[32];
    __shared__ float dots[8][8];   // [warp][expert of the chunk]
    __shared__ float logits[MAX_EXPERTS];
    const int t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, H4 = H / 4;
    const float4* xt = reinterpret_cast<const float4*>(x + (size_t)t * H);
    const float4* g4 = reinterpret_cast<const float4*>(gate);
    float4 gv[8][RN_VEC];
    const int chunk0 = min(E, 8);
#pragma unroll
    for (int e = 0; e < 8; e++)
#pragma unroll
        for (int r = 0; r < RN_VEC; r++) {
            const int c = threadIdx.x + r * 256;
            gv[e][r] = e < chunk0 && c < H4 ? g4[(size_t)e * H4 + c] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    float4 v[RN_VEC];
    float ss = 0.f;
#pragma unroll
    for (int r = 0; r < RN_VEC; r++) {
        const int c = threadIdx.x + r * 256;
        v[r] = c < H4 ? xt[c] : make_float4(0.f, 0.f, 0.f, 0.f);
        ss += v[r].x * v[r].x + v[r].y * v[r].y + v[r].z * v[r].z + v[r].w * v[r].w;
    }
    const float inv = block_rms_scale(ss, partial, H, eps);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    uint2* o = reinterpret_cast<uint2*>(out + (size_t)t * H);
#pragma unroll
    for (int r = 0; r < RN_VEC; r++) {
        const int c = threadIdx.x + r * 256;
        if (c < H4) {
            const float4 g = w4[c];
            v[r].x *= inv * g.x; v[r].y *= inv * g.y; v[r].z *= inv * g.z; v[r].w *= inv * g.w;
            o[c] = make_uint2((unsigned)f32_to_f16(v[r].x) | ((unsigned)f32_to_f16(v[r].y) << 16),
                              (unsigned)f32_to_f16(v[r].z) | ((unsigned)f32_to_f16(v[r].w) << 16));
        }
    }
    for (int e0 = 0; e0 < E; e0 += 8) {
        if (e0 > 0) { // more than 8 experts: the next 8 gate rows (the first 8 came before the norm)
#pragma unroll
            for (int e = 0; e < 8; e++)
#pragma unroll
                for (int r = 0; r < RN_VEC; r++) {
                    const int c = threadIdx.x + r * 256;
                    gv[e][r] = e0 + e < E && c < H4 ? g4[(size_t)(e0 + e) * H4 + c] : make_float4(0.f, 0.f, 0.f, 0.f);
                }
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float d = 0.f;
#pragma unroll
            for (int r = 0; r < RN_VEC; r++) d += gv[e][r].x * v[r].x + gv[e][r].y * v[r].y + gv[e][r].z * v[r].z + gv[e][r].w * v[r].w;
            d = warp_sum(d);
            if (lane == 0) dots[warp][e] = d;
        }
        __syncthreads();
        if (threadIdx.x < 8 && e0 + threadIdx.x < E) {
            float d = 0.f;
#pragma unroll
            for (int q = 0; q < 8; q++) d += dots[q][threadIdx.x];
            logits[e0 + threadIdx.x] = d;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float m = logits[0];
        for (int e = 1; e < E; e++) m = fmaxf(m, logits[e]);
        float sum = 0.f;
        for (int e = 0; e < E; e++) { logits[e] = expf(logits[e] - m); sum += logits[e]; }
        unsigned long long taken = 0;
        float kept = 0.f;
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!((taken >> e) & 1ull) && (best < 0 || logits[e] > logits[best])) best = e;
            taken |= 1ull << best;
            expert_ids[t * K + k] = best;
            expert_w[t * K + k] = logits[best] / sum;
            kept += logits[best] / sum;
        }
        for (int k = 0; k < K; k++) expert_w[t * K + k] /= kept;
    }
}

// One warp: the (token, choice) pairs p < P routed to expert e, ascending, written from out[0] on (when out is not
// null). Returns how many (every lane gets the count).
__device__ __forceinline__ int warp_routed_to(const int* expert_ids, int P, int e, int* out) {
    const int lane = threadIdx.x & 31;
    int count = 0;
    for (int base = 0; base < P; base += 32) {
        const bool mine = base + lane < P && expert_ids[base + lane] == e;
        const unsigned ballot = __ballot_sync(0xffffffffu, mine);
        if (mine && out) out[count + __popc(ballot & ((1u << lane) - 1))] = base + lane;
        count += __popc(ballot);
    }
    return count;
}

// Groups a prompt's (token, choice) pairs by expert on the device, for the prompt GEMMs (gemm.cu): slots = the
// pairs p = t·K + k ordered by expert, then by p (stable: deterministic sums); tiles = (expert, first slot, count
// ≤ tile_slots) for each tile_slots-slot piece of each expert's run (64 for gemm.cu, 128 for the wgmma GEMMs),
// tile_count[0] of them (≤ P/tile_slots + E). grid 1, block 256.
extern "C" __global__ void moe_group(const int* expert_ids, int P, int E, int tile_slots, int* slots, int* tiles, int* tile_count) {
    __shared__ int count[MAX_EXPERTS], start[MAX_EXPERTS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int e = warp; e < E; e += warps) {
        const int c = warp_routed_to(expert_ids, P, e, nullptr);
        if (lane == 0) count[e] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int at = 0, n = 0;
        for (int e = 0; e < E; e++) {
            start[e] = at;
            for (int s = 0; s < count[e]; s += tile_slots, n++) {
                tiles[3 * n] = e;
                tiles[3 * n + 1] = at + s;
                tiles[3 * n + 2] = min(tile_slots, count[e] - s);
            }
            at += count[e];
        }
        tile_count[0] = n;
    }
    __syncthreads();
    for (int e = warp; e < E; e += warps) warp_routed_to(expert_ids, P, e, slots + start[e]);
}

// This block's expert (the blockIdx.y-th of the experts the step's P = T·K choices use, ascending) and the
// choices routed to it, in order (shared list). Returns the number of choices; 0 = no such expert, exit.
__device__ __forceinline__ int block_expert(const int* expert_ids, int P, int* expert_out, int* list) {
    __shared__ int s_count, s_expert;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (warp == 0) {
        unsigned long long used = 0;
        for (int p = lane; p < P; p += 32) used |= 1ull << expert_ids[p];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) used |= __shfl_xor_sync(0xffffffffu, used, o);
        int e = -1;
        if (blockIdx.y < (unsigned)__popcll(used)) {
            unsigned long long rest = used;
            for (unsigned i = 0; i < blockIdx.y; i++) rest &= rest - 1; // drop the lowest set bits
            e = __ffsll(rest) - 1;
        }
        const int count = e >= 0 ? warp_routed_to(expert_ids, P, e, list) : 0;
        if (lane == 0) { s_count = count; s_expert = e; }
    }
    __syncthreads();
    *expert_out = s_expert;
    return s_count;
}

// h[p, r] = fp16(silu(W1_e[r]·x_t) · (W3_e[r]·x_t)) for every choice p = t·K + k routed to expert e.
// x: fp16 [T, H] (the normalised rows). grid (I / 16, min(E, T·K)), block MOE_SPLIT warps splitting H.
template <int NT, bool INT8>
__device__ __forceinline__ void gate_up_body(const char* W, const float* scales, const int* expert_ids, const f16_t* x,
                                             f16_t* h, int T, int I, int H, int K) {
    __shared__ int list[MAX_PAIRS];
    __shared__ float red[MOE_SPLIT / 2 * 2 * NT * 128];
    int e;
    const int n = block_expert(expert_ids, T * K, &e, list);
    if (n == 0) return;
    const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2;
    const int r0 = blockIdx.x * 16;
    const int esize = INT8 ? 1 : 2;
    const char* base = W + (size_t)e * 2 * I * H * esize;
    const char* wg[2];
    const char* wg8[2];
    tile_pointers(base, r0, H, esize, wg[0], wg8[0]);     // gate rows
    tile_pointers(base, I + r0, H, esize, wg[1], wg8[1]); // the matching up rows
    const int units = H / UNIT_COLS(INT8), per = (units + MOE_SPLIT - 1) / MOE_SPLIT;
    const int u0 = min(units, warp * per), u1 = min(units, u0 + per);
    for (int n0 = 0; n0 < n; n0 += 8 * NT) {
        const f16_t* xr[NT];
#pragma unroll
        for (int j = 0; j < NT; j++) xr[j] = x + (size_t)(list[min(n0 + 8 * j + g, n - 1)] / K) * H;
        float acc[2][NT][4] = {};
        skinny_warp<2, NT, INT8, NT == 1 ? MOE_UNROLL : 1>(wg, wg8, xr, u0, u1, acc);
        reduce_split<2, NT, MOE_SPLIT>(acc, red);
        if (warp == 0) {
            // m-tile 0 holds the gate rows, m-tile 1 the matching up rows: the same (row, token) in the same place
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int r = r0 + frag_row(i), slot = n0 + 8 * j + frag_token(i);
                    if (slot >= n) continue;
                    float a = acc[0][j][i], b = acc[1][j][i];
                    if (INT8) { a *= scales[(size_t)e * 2 * I + r]; b *= scales[(size_t)e * 2 * I + I + r]; }
                    h[(size_t)list[slot] * I + r] = f32_to_f16(silu_mul(a, b));
                }
        }
    }
}

// out[p, r] = w[p] · (W2_e[r] · h[p]) for every choice p routed to expert e; the next layer's norm (or the final
// one) adds a token's K rows to its residual. grid (H / 16, min(E, T·K)), block MOE_SPLIT warps splitting I.
template <int NT, bool INT8>
__device__ __forceinline__ void down_body(const char* W, const float* scales, const int* expert_ids, const float* expert_w,
                                          const f16_t* h, float* out, int T, int H, int I, int K) {
    __shared__ int list[MAX_PAIRS];
    __shared__ float red[MOE_SPLIT / 2 * NT * 128];
    int e;
    const int n = block_expert(expert_ids, T * K, &e, list);
    if (n == 0) return;
    const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2;
    const int r0 = blockIdx.x * 16;
    const int esize = INT8 ? 1 : 2;
    const char* base = W + (size_t)e * H * I * esize;
    const char* wg[1];
    const char* wg8[1];
    tile_pointers(base, r0, I, esize, wg[0], wg8[0]);
    const int units = I / UNIT_COLS(INT8), per = (units + MOE_SPLIT - 1) / MOE_SPLIT;
    const int u0 = min(units, warp * per), u1 = min(units, u0 + per);
    for (int n0 = 0; n0 < n; n0 += 8 * NT) {
        const f16_t* xr[NT];
#pragma unroll
        for (int j = 0; j < NT; j++) xr[j] = h + (size_t)list[min(n0 + 8 * j + g, n - 1)] * I;
        float acc[1][NT][4] = {};
        skinny_warp<1, NT, INT8, NT == 1 ? 2 * MOE_UNROLL : NT == 2 ? MOE_UNROLL : 1>(wg, wg8, xr, u0, u1, acc);
        reduce_split<1, NT, MOE_SPLIT>(acc, red);
        if (warp == 0) {
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int r = r0 + frag_row(i), slot = n0 + 8 * j + frag_token(i);
                    if (slot >= n) continue;
                    const int p = list[slot];
                    float v = acc[0][j][i] * expert_w[p];
                    if (INT8) v *= scales[(size_t)e * H + r];
                    out[(size_t)p * H + r] = v;
                }
        }
    }
}

#define MOE_KERNELS(NT) \
extern "C" __global__ void __launch_bounds__(MOE_SPLIT * 32) moe_gate_up_i8_nt##NT(const signed char* W, const float* scales, \
    const int* expert_ids, const f16_t* x, f16_t* h, int T, int I, int H, int K) \
{ gate_up_body<NT, true>(reinterpret_cast<const char*>(W), scales, expert_ids, x, h, T, I, H, K); } \
extern "C" __global__ void __launch_bounds__(MOE_SPLIT * 32) moe_gate_up_bf16_nt##NT(const bf16_t* W, const float* scales, \
    const int* expert_ids, const f16_t* x, f16_t* h, int T, int I, int H, int K) \
{ gate_up_body<NT, false>(reinterpret_cast<const char*>(W), scales, expert_ids, x, h, T, I, H, K); } \
extern "C" __global__ void __launch_bounds__(MOE_SPLIT * 32) moe_down_i8_nt##NT(const signed char* W, const float* scales, \
    const int* expert_ids, const float* expert_w, const f16_t* h, float* out, int T, int H, int I, int K) \
{ down_body<NT, true>(reinterpret_cast<const char*>(W), scales, expert_ids, expert_w, h, out, T, H, I, K); } \
extern "C" __global__ void __launch_bounds__(MOE_SPLIT * 32) moe_down_bf16_nt##NT(const bf16_t* W, const float* scales, \
    const int* expert_ids, const float* expert_w, const f16_t* h, float* out, int T, int H, int I, int K) \
{ down_body<NT, false>(reinterpret_cast<const char*>(W), scales, expert_ids, expert_w, h, out, T, H, I, K); }

MOE_KERNELS(1)
MOE_KERNELS(2)
MOE_KERNELS(4)
MOE_KERNELS(8)
