// Mixture of experts on the device: routing and the experts of decode steps. Expert ids stay in device
// memory (no host round trip per layer), so a decode step is CUDA-graph safe.
//
// Expert weights are stored per layer as [E, 2I, H] (w1 rows then w3 rows: gate and up fused) and
// [E, H, I] (w2), int8 with per-row scales [E, 2I] / [E, H], or bf16 with null scales.
#include "common.cuh"

#define MOE_WARPS 8
#define MAX_EXPERTS 64

// Router: logits = gate · x, softmax over all experts, keep the top k, renormalise (Hugging Face Mixtral).
// grid T, block 32 × E (one warp per expert).
extern "C" __global__ void router_topk(const float* xb, const float* gate, int* expert_ids, float* expert_w,
                                       int H, int E, int K) {
    __shared__ float logits[MAX_EXPERTS];
    const int t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (warp < E) {
        const float* g = gate + (size_t)warp * H;
        const float* x = xb + (size_t)t * H;
        float acc = 0.f;
        for (int i = lane; i < H; i += 32) acc += g[i] * x[i];
        acc = warp_sum(acc);
        if (lane == 0) logits[warp] = acc;
    }
    __syncthreads();
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

// h[p, r] = silu(W1_e[r]·x_t) · (W3_e[r]·x_t) for each (token t, choice k) pair p = t·K + k, e = expert_ids[p].
// A block computes MOE_ROWS outputs (2·MOE_ROWS weight rows); its warps split the row length and add their
// partial sums in shared memory. grid (ceil(I / MOE_ROWS), T·K).
#define MOE_ROWS 4
template <bool INT8>
__device__ __forceinline__ void gate_up_body(const void* W, const float* scales, const int* expert_ids, const float* x,
                                             float* h, int I, int H, int K) {
    __shared__ float part[MOE_WARPS][2 * MOE_ROWS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r0 = blockIdx.x * MOE_ROWS;
    const int p = blockIdx.y, t = p / K;
    const int e = expert_ids[p];
    const int per16 = INT8 ? 16 : 8, esize = INT8 ? 1 : 2;
    const int chunks = H / per16, slice = (chunks + MOE_WARPS - 1) / MOE_WARPS;
    const int c0 = warp * slice, c1 = min(chunks, c0 + slice);
    const char* base = reinterpret_cast<const char*>(W) + (size_t)e * 2 * I * H * esize;
    const int4* w[2 * MOE_ROWS];
#pragma unroll
    for (int k = 0; k < MOE_ROWS; k++) {
        const int r = min(r0 + k, I - 1);
        w[k] = reinterpret_cast<const int4*>(base + (size_t)r * H * esize);                 // w1 (gate)
        w[MOE_ROWS + k] = reinterpret_cast<const int4*>(base + (size_t)(I + r) * H * esize); // w3 (up)
    }
    const float* xt = x + (size_t)t * H;
    float acc[2 * MOE_ROWS];
#pragma unroll
    for (int k = 0; k < 2 * MOE_ROWS; k++) acc[k] = 0.f;
    for (int i = c0 + lane; i < c1; i += 32) {
        const float4* xv = reinterpret_cast<const float4*>(xt + (size_t)i * per16);
        int4 u[2 * MOE_ROWS];
#pragma unroll
        for (int k = 0; k < 2 * MOE_ROWS; k++) u[k] = __ldg(w[k] + i);
#pragma unroll
        for (int k = 0; k < 2 * MOE_ROWS; k++) acc[k] += INT8 ? dot16_i8(u[k], xv) : dot8_bf16(u[k], xv);
    }
#pragma unroll
    for (int k = 0; k < 2 * MOE_ROWS; k++) {
        const float v = warp_sum(acc[k]);
        if (lane == 0) part[warp][k] = v;
    }
    __syncthreads();
    if (threadIdx.x < MOE_ROWS) {
        const int k = threadIdx.x, r = r0 + k;
        if (r < I) {
            float a = 0.f, b = 0.f;
#pragma unroll
            for (int q = 0; q < MOE_WARPS; q++) { a += part[q][k]; b += part[q][MOE_ROWS + k]; }
            if (INT8) { a *= scales[(size_t)e * 2 * I + r]; b *= scales[(size_t)e * 2 * I + I + r]; }
            h[(size_t)p * I + r] = a / (1.f + expf(-a)) * b;
        }
    }
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * 32) moe_gate_up_i8(const signed char* W, const float* scales,
    const int* expert_ids, const float* x, float* h, int I, int H, int K) { gate_up_body<true>(W, scales, expert_ids, x, h, I, H, K); }
extern "C" __global__ void __launch_bounds__(MOE_WARPS * 32) moe_gate_up_bf16(const bf16_t* W, const float* scales,
    const int* expert_ids, const float* x, float* h, int I, int H, int K) { gate_up_body<false>(W, scales, expert_ids, x, h, I, H, K); }

// x[t, r] += Σ_k w[t,k] · (W2_{e(t,k)}[r] · h[t·K + k]): both experts of a token and the residual add in one
// pass. A block computes DOWN_ROWS rows; its warps split the 14336-long rows and add partial sums in shared
// memory, so a 4096-row output still gives 512 blocks per token. grid (ceil(H / DOWN_ROWS), T).
#define DOWN_ROWS 8
template <bool INT8>
__device__ __forceinline__ void down_body(const void* W, const float* scales, const int* expert_ids, const float* expert_w,
                                          const float* h, float* x, int H, int I, int K) {
    __shared__ float part[MOE_WARPS][DOWN_ROWS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r0 = blockIdx.x * DOWN_ROWS;
    const int t = blockIdx.y;
    const int per16 = INT8 ? 16 : 8, esize = INT8 ? 1 : 2;
    const int chunks = I / per16, slice = (chunks + MOE_WARPS - 1) / MOE_WARPS;
    const int c0 = warp * slice, c1 = min(chunks, c0 + slice);
    float total[DOWN_ROWS];
#pragma unroll
    for (int k = 0; k < DOWN_ROWS; k++) total[k] = 0.f;
    for (int j = 0; j < K; j++) {
        const int p = t * K + j, e = expert_ids[p];
        const int4* w[DOWN_ROWS];
#pragma unroll
        for (int k = 0; k < DOWN_ROWS; k++)
            w[k] = reinterpret_cast<const int4*>(reinterpret_cast<const char*>(W) + ((size_t)e * H + min(r0 + k, H - 1)) * I * esize);
        const float* hp = h + (size_t)p * I;
        float acc[DOWN_ROWS];
#pragma unroll
        for (int k = 0; k < DOWN_ROWS; k++) acc[k] = 0.f;
        for (int i = c0 + lane; i < c1; i += 32) {
            const float4* hv = reinterpret_cast<const float4*>(hp + (size_t)i * per16);
            int4 u[DOWN_ROWS];
#pragma unroll
            for (int k = 0; k < DOWN_ROWS; k++) u[k] = __ldg(w[k] + i);
#pragma unroll
            for (int k = 0; k < DOWN_ROWS; k++) acc[k] += INT8 ? dot16_i8(u[k], hv) : dot8_bf16(u[k], hv);
        }
        const float we = expert_w[p];
#pragma unroll
        for (int k = 0; k < DOWN_ROWS; k++)
            total[k] += we * (INT8 ? scales[(size_t)e * H + min(r0 + k, H - 1)] : 1.f) * acc[k];
    }
#pragma unroll
    for (int k = 0; k < DOWN_ROWS; k++) {
        const float v = warp_sum(total[k]);
        if (lane == 0) part[warp][k] = v;
    }
    __syncthreads();
    if (threadIdx.x < DOWN_ROWS && r0 + threadIdx.x < H) {
        float v = 0.f;
#pragma unroll
        for (int q = 0; q < MOE_WARPS; q++) v += part[q][threadIdx.x];
        x[(size_t)t * H + r0 + threadIdx.x] += v;
    }
}

extern "C" __global__ void __launch_bounds__(MOE_WARPS * 32) moe_down_i8(const signed char* W, const float* scales,
    const int* expert_ids, const float* expert_w, const float* h, float* x, int H, int I, int K) { down_body<true>(W, scales, expert_ids, expert_w, h, x, H, I, K); }
extern "C" __global__ void __launch_bounds__(MOE_WARPS * 32) moe_down_bf16(const bf16_t* W, const float* scales,
    const int* expert_ids, const float* expert_w, const float* h, float* x, int H, int I, int K) { down_body<false>(W, scales, expert_ids, expert_w, h, x, H, I, K); }
