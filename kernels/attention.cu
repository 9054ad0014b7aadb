// Causal attention over a paged KV cache (fp16), for prefill and decode alike: each (token, head) attends to
// positions 0..pos of its sequence. K/V cache per layer: [blocks, block_size, kv_heads · head_dim].
// q rows are q_stride apart (the fused qkv projection's output). grid (heads, T), block 512: the 16 warps take every 16th position with an online softmax each (one pass, no
// score buffer), then merge. head_dim ≤ 128, a multiple of 32.
#include "common.cuh"

#define ATT_WARPS 16

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_paged(
    const float* q, const f16_t* k_cache, const f16_t* v_cache, const int* positions, const int* seq_of_token,
    const int* block_tables, int max_blocks, float* out, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][128];
    const int head = blockIdx.x, t = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kv_head = head / (n_heads / n_kv), kv_dim = n_kv * D, per_lane = D / 32;
    const int pos = positions[t];
    const int* table = block_tables + (size_t)seq_of_token[t] * max_blocks;
    float qv[4], acc[4];
#pragma unroll
    for (int i = 0; i < 4; i++) { qv[i] = i < per_lane ? q[(size_t)t * q_stride + head * D + lane + 32 * i] * scale : 0.f; acc[i] = 0.f; }
    float m = -INFINITY, l = 0.f;
    for (int j = warp; j <= pos; j += ATT_WARPS) {
        const size_t slot = ((size_t)table[j / block_size] * block_size + j % block_size) * kv_dim + kv_head * D;
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < 4; i++) if (i < per_lane) s += qv[i] * f16_to_f32(k_cache[slot + lane + 32 * i]);
        s = warp_sum(s);
        const float m_new = fmaxf(m, s), correction = expf(m - m_new), p = expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int i = 0; i < 4; i++) if (i < per_lane) acc[i] = acc[i] * correction + p * f16_to_f32(v_cache[slot + lane + 32 * i]);
        m = m_new;
    }
    if (lane == 0) { s_m[warp] = m; s_l[warp] = l; }
#pragma unroll
    for (int i = 0; i < 4; i++) if (i < per_lane) s_acc[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    if (warp == 0) {
        float M = s_m[0];
        for (int w = 1; w < ATT_WARPS; w++) M = fmaxf(M, s_m[w]);
        float L = 0.f;
        float o[4] = {0.f, 0.f, 0.f, 0.f};
        for (int w = 0; w < ATT_WARPS; w++) {
            if (s_l[w] == 0.f) continue; // a warp that saw no position
            const float c = expf(s_m[w] - M);
            L += s_l[w] * c;
#pragma unroll
            for (int i = 0; i < 4; i++) if (i < per_lane) o[i] += s_acc[w][lane + 32 * i] * c;
        }
#pragma unroll
        for (int i = 0; i < 4; i++) if (i < per_lane) out[(size_t)t * n_heads * D + head * D + lane + 32 * i] = o[i] / L;
    }
}
