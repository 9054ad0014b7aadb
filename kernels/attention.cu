// Causal attention over a paged KV cache (fp16), for prefill and decode alike: each (token, head) attends to
// positions 0..pos of its sequence. K/V cache per layer: [blocks, block_size, kv_heads · head_dim].
// q rows are q_stride apart (the fused qkv projection's output).
//
// grid (heads, T), block of up to ATT_WARPS warps (decode uses 16: few blocks; prefill 4: many). Each warp takes 8 positions per step, 4 lanes per position (each lane
// holds D/4 dimensions as 16-byte fp16 loads), so a position costs 2 shuffles instead of a 5-step warp
// reduction, and 8 independent K/V loads are in flight per warp. Every lane group keeps an online softmax;
// groups merge within the warp by shuffles, warps merge through shared memory. D a multiple of 32, ≤ 128.
#include "common.cuh"

#define ATT_WARPS 16
#define ATT_MAX_D 128

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_paged(
    const float* q, const f16_t* k_cache, const f16_t* v_cache, const int* positions, const int* seq_of_token,
    const int* block_tables, int max_blocks, f16_t* out, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_D];
    const int head = blockIdx.x, t = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;                    // ≤ ATT_WARPS
    const int group = lane >> 2, sub = lane & 3;          // 8 position groups of 4 lanes
    const int kv_head = head / (n_heads / n_kv), kv_dim = n_kv * D;
    const int per = D / 4;                                // dims per lane: 8 (D=32) .. 32 (D=128)
    const int loads = per / 8;                            // 16-byte fp16 loads per lane per position
    const int pos = positions[t];
    const int* table = block_tables + (size_t)seq_of_token[t] * max_blocks;

    float qv[32], acc[32];
#pragma unroll
    for (int i = 0; i < 32; i++) {
        qv[i] = i < per ? q[(size_t)t * q_stride + head * D + sub * per + i] * scale : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    // the loop bound is the same for all lanes of a warp (shuffles need the whole warp); lanes past pos idle
    for (int base = warp * 8; base <= pos; base += warps * 8) {
        const int j = base + group;
        const bool valid = j <= pos;
        float s = 0.f;
        int4 vv[4];
        if (valid) {
            const size_t slot = ((size_t)table[j / block_size] * block_size + j % block_size) * kv_dim + kv_head * D + sub * per;
            const int4* kp = reinterpret_cast<const int4*>(k_cache + slot);
            const int4* vp = reinterpret_cast<const int4*>(v_cache + slot);
#pragma unroll
            for (int c = 0; c < 4; c++) if (c < loads) vv[c] = vp[c]; // V's loads go out with K's, not after the softmax
#pragma unroll
            for (int c = 0; c < 4; c++) {
                if (c < loads) {
                    const int4 kk = kp[c];
                    const f16_t* kh = reinterpret_cast<const f16_t*>(&kk);
#pragma unroll
                    for (int e = 0; e < 8; e++) s += qv[c * 8 + e] * f16_to_f32(kh[e]);
                }
            }
        }
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if (valid) {
            const float m_new = fmaxf(m, s), correction = expf(m - m_new), p = expf(s - m_new);
            l = l * correction + p;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                if (c < loads) {
                    const f16_t* vh = reinterpret_cast<const f16_t*>(&vv[c]);
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[c * 8 + e] = acc[c * 8 + e] * correction + p * f16_to_f32(vh[e]);
                }
            }
            m = m_new;
        }
    }
    // merge the 8 groups of this warp (lanes with the same sub-lane index hold the same dimensions);
    // element by element with compile-time indices, so acc stays in registers
#pragma unroll
    for (int off = 4; off < 32; off <<= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        const float l2 = __shfl_xor_sync(0xffffffffu, l, off);
        const float mm = fmaxf(m, m2);
        const float c1 = m == -INFINITY ? 0.f : expf(m - mm);
        const float c2 = m2 == -INFINITY ? 0.f : expf(m2 - mm);
#pragma unroll
        for (int i = 0; i < 32; i++) acc[i] = acc[i] * c1 + __shfl_xor_sync(0xffffffffu, acc[i], off) * c2;
        l = l * c1 + l2 * c2;
        m = mm;
    }
    if (group == 0) {
#pragma unroll
        for (int i = 0; i < 32; i++) if (i < per) s_acc[warp][sub * per + i] = acc[i];
        if (sub == 0) { s_m[warp] = m; s_l[warp] = l; }
    }
    __syncthreads();
    // merge the warps: one thread per dimension
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float M = -INFINITY, L = 0.f, o = 0.f;
        for (int w = 0; w < warps; w++) {
            if (s_m[w] == -INFINITY) continue; // a warp that saw no position
            const float mm = fmaxf(M, s_m[w]);
            const float c1 = M == -INFINITY ? 0.f : expf(M - mm), c2 = expf(s_m[w] - mm);
            o = o * c1 + s_acc[w][d] * c2;
            L = L * c1 + s_l[w] * c2;
            M = mm;
        }
        out[(size_t)t * n_heads * D + head * D + d] = f32_to_f16(o / L); // the o projection's fp16 input
    }
}
