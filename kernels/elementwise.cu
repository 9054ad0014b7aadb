// The small per-token ops of the forward pass: embedding gather, residual + RMSNorm, RoPE + KV-cache store,
// residual add, and the gather/scatter around prefill's per-expert GEMMs.
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
extern "C" __global__ void residual_rmsnorm_f16(float* x, const int* rows, const float* pairs, int K, int write_back,
                                                const float* w, f16_t* out, int H, float eps) {
    __shared__ float partial[32];
    const int i = blockIdx.x, t = rows ? rows[i] : i, H4 = H / 4;
    float4* xt = reinterpret_cast<float4*>(x + (size_t)t * H);
    const float4* pt = pairs ? reinterpret_cast<const float4*>(pairs + (size_t)t * K * H) : nullptr;
    // one pass: each thread keeps its (≤ RN_HOLD) float4 of the row in registers (H ≤ 4 · RN_HOLD · blockDim)
    constexpr int RN_HOLD = 8;
    float4 v[RN_HOLD];
    float ss = 0.f;
#pragma unroll
    for (int r = 0; r < RN_HOLD; r++) {
        const int c = threadIdx.x + r * blockDim.x;
        if (c < H4) {
            v[r] = xt[c];
            if (pt)
                for (int k = 0; k < K; k++) {
                    const float4 p = pt[(size_t)k * H4 + c];
                    v[r].x += p.x; v[r].y += p.y; v[r].z += p.z; v[r].w += p.w;
                }
            if (pt && write_back) xt[c] = v[r];
            ss += v[r].x * v[r].x + v[r].y * v[r].y + v[r].z * v[r].z + v[r].w * v[r].w;
        }
    }
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float u = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.f;
        u = warp_sum(u);
        if (threadIdx.x == 0) partial[0] = rsqrtf(u / H + eps);
    }
    __syncthreads();
    const float inv = partial[0];
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

extern "C" __global__ void add_inplace(float* x, const float* y, long n) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// Prefill MoE: out[i, :] = x[rows[i], :] (fp16 rows). grid n, block 256.
extern "C" __global__ void gather_rows_f16(const f16_t* x, const int* rows, f16_t* out, int H) {
    const f16_t* src = x + (size_t)rows[blockIdx.x] * H;
    for (int c = threadIdx.x; c < H; c += blockDim.x) out[(size_t)blockIdx.x * H + c] = src[c];
}

// Prefill MoE: h[i, :] = fp16(silu(gu[i, :I]) · gu[i, I:]). grid n, block 256.
extern "C" __global__ void swiglu_rows_f16(const float* gu, f16_t* h, int I) {
    const int i = blockIdx.x;
    const float* g = gu + (size_t)i * 2 * I;
    for (int c = threadIdx.x; c < I; c += blockDim.x) {
        const float a = g[c];
        h[(size_t)i * I + c] = f32_to_f16(a / (1.f + expf(-a)) * g[I + c]);
    }
}

// Prefill MoE: x[rows[i], :] += w[i] · y[i, :]. Each token appears once per expert, and experts run one
// after another on one stream, so no two blocks of a launch write the same row. grid n, block 256.
extern "C" __global__ void scatter_add_rows(const float* y, const int* rows, const float* w, float* x, int H) {
    const int i = blockIdx.x;
    float* dst = x + (size_t)rows[i] * H;
    for (int c = threadIdx.x; c < H; c += blockDim.x) dst[c] += w[i] * y[(size_t)i * H + c];
}

// For each selected token row, the index of its largest logit (greedy sampling on the device). grid N, block 1024.
extern "C" __global__ void argmax_rows(const float* logits, int* out, int V) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    const float* row = logits + (size_t)blockIdx.x * V;
    float v = -INFINITY;
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (row[i] > v) { v = row[i]; idx = i; }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
    }
    if ((threadIdx.x & 31) == 0) { best_v[threadIdx.x >> 5] = v; best_i[threadIdx.x >> 5] = idx; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (best_v[w] > v || (best_v[w] == v && best_i[w] < idx)) { v = best_v[w]; idx = best_i[w]; }
        out[blockIdx.x] = idx;
    }
}
