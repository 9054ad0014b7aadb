// The small per-token ops of the forward pass: embedding gather, residual + RMSNorm, RoPE + KV-cache store.
#include "common.cuh"

// out[t, :] = table[tokens[t], :] (bf16 → fp32). grid T, block 256.
extern "C" __global__ void embed_bf16(const int* tokens, const bf16_t* table, float* out, int H) {
    const int t = blockIdx.x;
    const bf16_t* row = table + (size_t)tokens[t] * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) out[(size_t)t * H + i] = bf16_to_f32(row[i]);
}

// The residual stream into the next product: row i of out comes from token t = rows ? rows[i] : i,
// v = x[t] (+ Σ_k pairs[t·K + k], the previous layer's expert outputs, when pairs; stored back into x when
// write_back), out[i] = fp16(v · w / sqrt(mean(v²) + eps)), fp32 math as transformers. grid n, block 256
// (H a multiple of 4, ≤ 8192 at 256 threads: one pass, 16-byte loads, the row held in registers).
extern "C" __global__ void residual_rmsnorm_f16(float* __restrict__ x, const int* rows, const float* __restrict__ pairs, int K,
    int write_back, const float* __restrict__ w, f16_t* __restrict__ out, int H, float eps) {
    __shared__ float partial[32];
    const int i = blockIdx.x, t = rows ? rows[i] : i, H4 = H / 4;
    float4* xt = reinterpret_cast<float4*>(x + (size_t)t * H);
    const float4* pt = pairs ? reinterpret_cast<const float4*>(pairs + (size_t)t * K * H) : nullptr;
    // one pass: each thread keeps its (≤ RN_HOLD) float4 of the row in registers (H ≤ 4 · RN_HOLD · blockDim); every
    // load of the row and its pair rows goes out before the first add (x and pairs never alias: __restrict__), so a
    // token costs one memory latency, not one per pair row (T = 1: 3.9 → 2.7 µs, H200, harness --old-kernels, 2026-11-29)
    constexpr int RN_HOLD = 8, RN_PAIRS = 4; // pair rows a token: K · the down product's parts (≤ 2 · 2)
    float4 v[RN_HOLD];
    float ss = 0.f;
#pragma unroll
    for (int r = 0; r < RN_HOLD; r++) {
        const int c = threadIdx.x + r * blockDim.x;
        if (c < H4) v[r] = xt[c];
    }
    if (pt) {
        float4 p[RN_HOLD][RN_PAIRS];
#pragma unroll
        for (int r = 0; r < RN_HOLD; r++)
#pragma unroll
            for (int k = 0; k < RN_PAIRS; k++) {
                const int c = threadIdx.x + r * blockDim.x;
                if (c < H4 && k < K) p[r][k] = pt[(size_t)k * H4 + c];
            }
#pragma unroll
        for (int r = 0; r < RN_HOLD; r++)
#pragma unroll
            for (int k = 0; k < RN_PAIRS; k++) {
                const int c = threadIdx.x + r * blockDim.x;
                if (c < H4 && k < K) { v[r].x += p[r][k].x; v[r].y += p[r][k].y; v[r].z += p[r][k].z; v[r].w += p[r][k].w; }
            }
        for (int k = RN_PAIRS; k < K; k++) // more pair rows than that (not Mixtral's): one latency each
#pragma unroll
            for (int r = 0; r < RN_HOLD; r++) {
                const int c = threadIdx.x + r * blockDim.x;
                if (c < H4) { const float4 q = pt[(size_t)k * H4 + c]; v[r].x += q.x; v[r].y += q.y; v[r].z += q.z; v[r].w += q.w; }
            }
    }
#pragma unroll
    for (int r = 0; r < RN_HOLD; r++) {
        const int c = threadIdx.x + r * blockDim.x;
        if (c < H4) {
            if (pt && write_back) xt[c] = v[r];
            ss += v[r].x * v[r].x + v[r].y * v[r].y + v[r].z * v[r].z + v[r].w * v[r].w;
        }
    }
    const float inv = block_rms_scale(ss, partial, H, eps);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    uint2* o = reinterpret_cast<uint2*>(out + (size_t)i * H);
#pragma unroll
    for (int r = 0; r < RN_HOLD; r++) {
        const int c = threadIdx.x + r * blockDim.x;
        if (c < H4) {
            const float4 g = w4[c];
            o[c] = make_uint2((unsigned)f32_to_f16(v[r].x * inv * g.x) | ((unsigned)f32_to_f16(v[r].y * inv * g.y) << 16),
                              (unsigned)f32_to_f16(v[r].z * inv * g.z) | ((unsigned)f32_to_f16(v[r].w * inv * g.w) << 16));
        }
    }
}

// Rotary embedding (half-split layout, as transformers' rotate_half) on q in place and on k, then k and v stored as
// fp16 into the sequence's KV block at the token's position. qkv: [T, qDim + 2·kvDim] (the fused projection's
// output). cos/sin: [positions, D/2]. One block per (token, head) — q heads, then k heads — of D/2 threads, one
// rotated pair each (a decode step was one 128-thread block per token walking all 40 heads: 8 µs on an H100).
// grid (T, n_heads + n_kv), block D/2.
extern "C" __global__ void rope_store_kv(float* qkv, const int* positions, const int* seq_of_token, const int* block_tables,
    int max_blocks, f16_t* k_cache, f16_t* v_cache, const float* cos_t, const float* sin_t,
    int n_heads, int n_kv, int D, int block_size) {
    const int t = blockIdx.x, head = blockIdx.y, j = threadIdx.x, half = D / 2, q_dim = n_heads * D, kv_dim = n_kv * D;
    const int pos = positions[t];
    float* row = qkv + (size_t)t * (q_dim + 2 * kv_dim);
    float* v = row + head * D; // q heads, then k heads (contiguous after q)
    const float c = cos_t[(size_t)pos * half + j], s = sin_t[(size_t)pos * half + j];
    const float a = v[j], b = v[j + half];
    const float ra = a * c - b * s, rb = b * c + a * s;
    if (head < n_heads) {
        v[j] = ra;
        v[j + half] = rb;
        return;
    }
    const int kh = head - n_heads;
    const int block = block_tables[(size_t)seq_of_token[t] * max_blocks + pos / block_size];
    const size_t slot = ((size_t)block * block_size + pos % block_size) * kv_dim + kh * D;
    k_cache[slot + j] = f32_to_f16(ra);
    k_cache[slot + j + half] = f32_to_f16(rb);
    const float* vv = row + q_dim + kv_dim + kh * D;
    v_cache[slot + j] = f32_to_f16(vv[j]);
    v_cache[slot + j + half] = f32_to_f16(vv[j + half]);
}
