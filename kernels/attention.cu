// Causal attention over a paged KV cache (fp16): each (token, head) attends to positions 0..pos of its sequence.
// K/V cache per layer: [blocks, block_size, kv_heads · head_dim]; q rows are q_stride apart (the fused qkv
// projection's output); the output is fp16 (the o projection's input).
//
// attend_range: a block's warps take 8 positions per step each, 4 lanes per position (each lane holds D/4
// dimensions as 16-byte fp16 loads), so a position costs 2 shuffles instead of a 5-step warp reduction, and 8
// independent K/V loads are in flight per warp. Every lane group keeps an online softmax; groups merge within the
// warp by shuffles; the warps' results go to shared memory. D a multiple of 32, ≤ 128.
//   attention_paged (prompts): grid (heads, T), 4 warps: one block per (token, head), many blocks.
//   attention_split (decode): grid (heads, T, splits ≤ 8): each (token, head) splits its positions over
//     several blocks (a decode step has only 32 heads × a few tokens: one block each left most of the GPU idle
//     and walked 600 positions serially); the last block to finish merges the partial softmaxes, in split order.
#include "common.cuh"

#define ATT_WARPS 16
#define ATT_MAX_D 128

__device__ __forceinline__ void attend_range(const float* q, const f16_t* k_cache, const f16_t* v_cache, const int* table,
    int t, int head, int j0, int j1, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride,
    float* s_m, float* s_l, float (*s_acc)[ATT_MAX_D]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;                    // ≤ ATT_WARPS
    const int group = lane >> 2, sub = lane & 3;          // 8 position groups of 4 lanes
    const int kv_head = head / (n_heads / n_kv), kv_dim = n_kv * D;
    const int per = D / 4;                                // dims per lane: 8 (D=32) .. 32 (D=128)
    const int loads = per / 8;                            // 16-byte fp16 loads per lane per position

    float qv[32], acc[32];
#pragma unroll
    for (int i = 0; i < 32; i++) {
        qv[i] = i < per ? q[(size_t)t * q_stride + head * D + sub * per + i] * scale : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    // the loop bound is the same for all lanes of a warp (shuffles need the whole warp); lanes past pos idle
    for (int base = j0 + warp * 8; base < j1; base += warps * 8) {
        const int j = base + group;
        const bool valid = j < j1;
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
}

// Folds a partial softmax (max m, sum l, unnormalised output o) into a running one (M, L, O); a part that saw no
// position (m = -inf) changes nothing.
__device__ __forceinline__ void merge_partial(float& M, float& L, float& O, float m, float l, float o) {
    if (m == -INFINITY) return;
    const float mm = fmaxf(M, m);
    const float c1 = M == -INFINITY ? 0.f : expf(M - mm), c2 = expf(m - mm);
    O = O * c1 + o * c2;
    L = L * c1 + l * c2;
    M = mm;
}

// Merges the warps' (m, l, acc) in shared memory into the block's: thread d < D gets (M, L, O[d]).
__device__ __forceinline__ void merge_warps(int d, int warps, const float* s_m, const float* s_l, const float (*s_acc)[ATT_MAX_D],
                                            float& M, float& L, float& O) {
    M = -INFINITY; L = 0.f; O = 0.f;
    for (int w = 0; w < warps; w++) merge_partial(M, L, O, s_m[w], s_l[w], s_acc[w][d]);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_paged(
    const float* q, const f16_t* k_cache, const f16_t* v_cache, const int* positions, const int* seq_of_token,
    const int* block_tables, int max_blocks, f16_t* out, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_D];
    const int head = blockIdx.x, t = blockIdx.y;
    attend_range(q, k_cache, v_cache, block_tables + (size_t)seq_of_token[t] * max_blocks, t, head, 0, positions[t] + 1,
                 n_heads, n_kv, D, block_size, scale, q_stride, s_m, s_l, s_acc);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float M, L, O;
        merge_warps(d, blockDim.x >> 5, s_m, s_l, s_acc, M, L, O);
        out[(size_t)t * n_heads * D + head * D + d] = f32_to_f16(O / L);
    }
}

// Decode: split (token, head) t·n_heads + head's positions over gridDim.z blocks (the backend's AttentionSplits at
// most, which sizes the partial buffers). part_o: [T, heads,
// splits, D] unnormalised outputs, part_ml: [T, heads, splits, 2] (max, sum), arrivals: [T · heads] counters at 0
// (the merging block puts its counter back to 0, so the buffers are ready for the next step and graph replays).
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_split(
    const float* q, const f16_t* k_cache, const f16_t* v_cache, const int* positions, const int* seq_of_token,
    const int* block_tables, int max_blocks, f16_t* out, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride,
    float* part_o, float* part_ml, int* arrivals) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_D];
    __shared__ int s_last;
    const int head = blockIdx.x, t = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int n = positions[t] + 1;
    const int chunk = ((n + splits - 1) / splits + 7) / 8 * 8; // whole 8-position steps
    const int j0 = min(n, split * chunk), j1 = min(n, j0 + chunk);
    attend_range(q, k_cache, v_cache, block_tables + (size_t)seq_of_token[t] * max_blocks, t, head, j0, j1,
                 n_heads, n_kv, D, block_size, scale, q_stride, s_m, s_l, s_acc);
    const size_t th = (size_t)t * n_heads + head;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float M, L, O;
        merge_warps(d, blockDim.x >> 5, s_m, s_l, s_acc, M, L, O);
        part_o[(th * splits + split) * D + d] = O;
        if (d == 0) { part_ml[(th * splits + split) * 2] = M; part_ml[(th * splits + split) * 2 + 1] = L; }
    }
    __threadfence(); // the partials are visible before this block counts itself in
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(&arrivals[th], 1) == splits - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float M = -INFINITY, L = 0.f, O = 0.f;
        for (int s = 0; s < splits; s++)
            merge_partial(M, L, O, __ldcg(&part_ml[(th * splits + s) * 2]), __ldcg(&part_ml[(th * splits + s) * 2 + 1]),
                          __ldcg(&part_o[(th * splits + s) * D + d]));
        out[th * D + d] = f32_to_f16(O / L);
    }
    if (threadIdx.x == 0) arrivals[th] = 0;
}
