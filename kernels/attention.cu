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
//   attention_decode_gqa (decode steps of 4+ sequences, D = 128): one block per (token, kv head, split) for all of
//     the kv head's query heads, each K/V row read once (below).
//   attention_prefill (prompts, D = 128): tensor cores, FlashAttention-2 style (below).
#include "common.cuh"
#include "mma.cuh" // mma_f16 (attention_prefill)

#define ATT_WARPS 16
#define ATT_MAX_D 128

// Fused rope + KV store (decode steps whose tokens are each the last of their own sequence, so no block needs a row
// another block of the step writes): q is rotated as it is loaded, the token's own position takes k (rotated) and v
// straight from its qkv row, rounded to fp16 as the cache holds them, and one block per (token, kv head) stores them.
// Dimension d of a rotated head row (half-split layout, rope_store_kv's formula); cs/sn: cos/sin at the position.
__device__ __forceinline__ float rope_dim(const float* head_row, int d, int half, const float* cs, const float* sn) {
    const int j = d < half ? d : d - half;
    const float a = head_row[j], b = head_row[j + half];
    return d < half ? a * cs[j] - b * sn[j] : b * cs[j] + a * sn[j];
}

// 8 consecutive dimensions d0.. of the token's rotated k and its v as packed fp16 (the cache's 16-byte loads).
__device__ __forceinline__ void rope_kv_pack(const float* k_row, const float* v_row, int d0, int half, const float* cs,
                                             const float* sn, int4& kk, int4& vv) {
    f16_t* kh = reinterpret_cast<f16_t*>(&kk);
    f16_t* vh = reinterpret_cast<f16_t*>(&vv);
#pragma unroll
    for (int e = 0; e < 8; e++) {
        kh[e] = f32_to_f16(rope_dim(k_row, d0 + e, half, cs, sn));
        vh[e] = f32_to_f16(v_row[d0 + e]);
    }
}

// The fused path's store: the token's rotated k and its v of kv head kvh into the cache at its position (the
// block's threads over D).
__device__ __forceinline__ void rope_store_own_kv(const float* qkv_row, int n_heads, int n_kv, int kvh, int D, int pos,
    const int* table, int block_size, f16_t* k_cache, f16_t* v_cache, const float* cs, const float* sn) {
    const int kv_dim = n_kv * D;
    const float* k_row = qkv_row + n_heads * D + kvh * D;
    const float* v_row = qkv_row + n_heads * D + kv_dim + kvh * D;
    const size_t slot = ((size_t)table[pos / block_size] * block_size + pos % block_size) * kv_dim + kvh * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        k_cache[slot + d] = f32_to_f16(rope_dim(k_row, d, D / 2, cs, sn));
        v_cache[slot + d] = f32_to_f16(v_row[d]);
    }
}

// cos_t non-null: the fused rope (above) for a token at position j1 - 1 of its sequence.
__device__ __forceinline__ void attend_range(const float* q, const f16_t* k_cache, const f16_t* v_cache, const int* table,
    int t, int head, int j0, int j1, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride,
    float* s_m, float* s_l, float (*s_acc)[ATT_MAX_D], const float* cos_t = nullptr, const float* sin_t = nullptr, int pos = -1,
    float* s_q = nullptr) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;                    // ≤ ATT_WARPS
    const int group = lane >> 2, sub = lane & 3;          // 8 position groups of 4 lanes
    const int kv_head = head / (n_heads / n_kv), kv_dim = n_kv * D;
    const int per = D / 4;                                // dims per lane: 8 (D=32) .. 32 (D=128)
    const int loads = per / 8;                            // 16-byte fp16 loads per lane per position

    const int half = D / 2;
    const float* q_row = q + (size_t)t * q_stride;
    const float* cs = cos_t ? cos_t + (size_t)pos * half : nullptr;
    const float* sn = cos_t ? sin_t + (size_t)pos * half : nullptr;
    if (cos_t) { // the head's rotated q, once a block (s_q: D floats of shared memory)
        for (int d = threadIdx.x; d < D; d += blockDim.x) s_q[d] = rope_dim(q_row + head * D, d, half, cs, sn);
        __syncthreads();
    }
    float qv[32], acc[32];
#pragma unroll
    for (int i = 0; i < 32; i++) {
        qv[i] = i < per ? (cos_t ? s_q[sub * per + i] : q_row[head * D + sub * per + i]) * scale : 0.f;
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
            int4 kr[4];
            if (cos_t && j == pos) { // the token's own row: from its qkv row (fused rope), not yet in the cache
#pragma unroll
                for (int c = 0; c < 4; c++)
                    if (c < loads) rope_kv_pack(q_row + n_heads * D + kv_head * D, q_row + n_heads * D + kv_dim + kv_head * D,
                                                sub * per + c * 8, half, cs, sn, kr[c], vv[c]);
            } else {
                const size_t slot = ((size_t)table[j / block_size] * block_size + j % block_size) * kv_dim + kv_head * D + sub * per;
                const int4* kp = reinterpret_cast<const int4*>(k_cache + slot);
                const int4* vp = reinterpret_cast<const int4*>(v_cache + slot);
#pragma unroll
                for (int c = 0; c < 4; c++) if (c < loads) { vv[c] = vp[c]; kr[c] = kp[c]; } // V's loads go out with K's
            }
#pragma unroll
            for (int c = 0; c < 4; c++) {
                if (c < loads) {
                    const int4 kk = kr[c];
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
// position (m = -inf) changes nothing. Base2: the maxima are of scores in the log2 domain (exp2 of differences).
template <bool Base2 = false>
__device__ __forceinline__ void merge_partial(float& M, float& L, float& O, float m, float l, float o) {
    if (m == -INFINITY) return;
    const float mm = fmaxf(M, m);
    const float c1 = M == -INFINITY ? 0.f : (Base2 ? exp2f(M - mm) : expf(M - mm)), c2 = Base2 ? exp2f(m - mm) : expf(m - mm);
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
// cos_t/sin_t non-null: rope and the KV store fused in (above; every token the last of its own sequence), else the
// cache already holds the token's row (rope_store_kv).
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_split(
    const float* q, f16_t* k_cache, f16_t* v_cache, const int* positions, const int* seq_of_token,
    const int* block_tables, int max_blocks, f16_t* out, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride,
    float* part_o, float* part_ml, int* arrivals, const float* cos_t, const float* sin_t) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_D];
    __shared__ float s_q[ATT_MAX_D];
    __shared__ int s_last;
    const int head = blockIdx.x, t = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int n = positions[t] + 1;
    const int chunk = ((n + splits - 1) / splits + 7) / 8 * 8; // whole 8-position steps
    const int j0 = min(n, split * chunk), j1 = min(n, j0 + chunk);
    const int* table = block_tables + (size_t)seq_of_token[t] * max_blocks;
    const int group = n_heads / n_kv;
    if (cos_t && split == 0 && head % group == 0)
        rope_store_own_kv(q + (size_t)t * q_stride, n_heads, n_kv, head / group, D, n - 1, table, block_size, k_cache, v_cache,
                          cos_t + (size_t)(n - 1) * (D / 2), sin_t + (size_t)(n - 1) * (D / 2));
    attend_range(q, k_cache, v_cache, table, t, head, j0, j1,
                 n_heads, n_kv, D, block_size, scale, q_stride, s_m, s_l, s_acc, cos_t, sin_t, n - 1, s_q);
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

// ---------------------------------------------------------------------------------------------------------------
// attention_decode_gqa (decode steps of many sequences): one block per (token, kv head, split) serving all the kv head's
// query heads (Mixtral: 4) from one read of each K/V row. attention_paged and attention_split give each query head its
// own block, so every K/V row crossed from L2 to the SMs 4 times (64 sequences: 1.2 ms of an 18.2 ms decode step;
// ncu, H200, 2026-11-29). Same inputs, split outputs and fused rope (cos_t non-null) as attention_split; without it reads
// positions 0..pos from the cache (rope_store_kv has stored pos). D == 128 and n_heads / n_kv ≤ GQ_HEADS only (the caller checks).
// A warp takes 4 positions a step, 8 lanes a position, 16 dimensions a lane: the 4 query heads' dot products share the
// K loads, their 4 running softmaxes (log2 domain: q pre-scaled by scale · log2 e) the V loads, and the next step's
// K/V rows load while this one computes. Partials merge as in attention_split, with one arrival counter per
// (token, kv head): arrivals[t · n_heads + kv_head · group].
// grid (n_kv, T, splits ≤ the backend's AttentionSplits), block GQ_WARPS · 32.
#define GQ_WARPS 4
#define GQ_HEADS 4
#define GQ_D 128

extern "C" __global__ void __launch_bounds__(GQ_WARPS * 32) attention_decode_gqa(
    const float* q, f16_t* k_cache, f16_t* v_cache, const int* positions, const int* seq_of_token,
    const int* block_tables, int max_blocks, f16_t* out, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride,
    float* part_o, float* part_ml, int* arrivals, const float* cos_t, const float* sin_t) {
    __shared__ float s_acc[GQ_WARPS][GQ_HEADS][GQ_D];
    __shared__ float s_m[GQ_WARPS][GQ_HEADS], s_l[GQ_WARPS][GQ_HEADS];
    __shared__ float s_q[GQ_HEADS][GQ_D]; // the rotated q heads (fused rope)
    __shared__ int s_last;
    const int group = n_heads / n_kv;
    if (D != GQ_D || group > GQ_HEADS) return;
    const int kvh = blockIdx.x, t = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 3, sub = lane & 7;
    const int n = positions[t] + 1;
    const int chunk = ((n + splits - 1) / splits + 3) / 4 * 4; // whole 4-position steps
    const int j0 = min(n, split * chunk), j1 = min(n, j0 + chunk);
    const int* table = block_tables + (size_t)seq_of_token[t] * max_blocks;
    const size_t kv_dim = (size_t)n_kv * GQ_D;
    const float qs = scale * 1.4426950408889634f; // log2 e
    const float* q_row = q + (size_t)t * q_stride;
    const int pos = n - 1, half = GQ_D / 2;
    const float* cs = cos_t ? cos_t + (size_t)pos * half : nullptr;
    const float* sn = cos_t ? sin_t + (size_t)pos * half : nullptr;
    if (cos_t) {
        if (split == 0) rope_store_own_kv(q_row, n_heads, n_kv, kvh, GQ_D, pos, table, block_size, k_cache, v_cache, cs, sn);
        for (int idx = threadIdx.x; idx < group * GQ_D; idx += blockDim.x)
            s_q[idx / GQ_D][idx % GQ_D] = rope_dim(q_row + (kvh * group + idx / GQ_D) * GQ_D, idx % GQ_D, half, cs, sn);
        __syncthreads();
    }

    float qv[GQ_HEADS][16], acc[GQ_HEADS][16], m[GQ_HEADS], l[GQ_HEADS];
#pragma unroll
    for (int h = 0; h < GQ_HEADS; h++) {
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const int d = sub * 16 + i;
            const float* head_row = q_row + (kvh * group + h) * GQ_D;
            qv[h][i] = h < group ? (cos_t ? s_q[h][d] : head_row[d]) * qs : 0.f;
            acc[h][i] = 0.f;
        }
        m[h] = -INFINITY;
        l[h] = 0.f;
    }
    // position j's K/V dimensions of this lane: from the cache, or (fused rope) the token's own from its qkv row
    auto load = [&](int j, int4* kk, int4* vv) {
        if (cos_t && j == pos) {
            const float* k_row = q_row + n_heads * GQ_D + kvh * GQ_D;
            for (int c = 0; c < 2; c++) rope_kv_pack(k_row, k_row + kv_dim, sub * 16 + c * 8, half, cs, sn, kk[c], vv[c]);
            return;
        }
        const size_t r = ((size_t)table[j / block_size] * block_size + j % block_size) * kv_dim + kvh * GQ_D + sub * 16;
        kk[0] = reinterpret_cast<const int4*>(k_cache + r)[0]; kk[1] = reinterpret_cast<const int4*>(k_cache + r)[1];
        vv[0] = reinterpret_cast<const int4*>(v_cache + r)[0]; vv[1] = reinterpret_cast<const int4*>(v_cache + r)[1];
    };
    const int stride = GQ_WARPS * 4;
    int j = j0 + warp * 4 + g;
    bool valid = j < j1;
    int4 kk[2] = {}, vv[2] = {};
    if (valid) load(j, kk, vv);
    // the loop bound is the same for the whole warp (shuffles); lanes past j1 idle
    for (int base = j0 + warp * 4; base < j1; base += stride) {
        const int jn = j + stride;
        const bool vn = jn < j1;
        int4 nk[2] = {}, nv[2] = {};
        if (vn) load(jn, nk, nv);
        float kf[16], s[GQ_HEADS];
        const f16_t* kh = reinterpret_cast<const f16_t*>(kk);
#pragma unroll
        for (int i = 0; i < 16; i++) kf[i] = f16_to_f32(kh[i]);
#pragma unroll
        for (int h = 0; h < GQ_HEADS; h++) {
            float d = 0.f;
#pragma unroll
            for (int i = 0; i < 16; i++) d += qv[h][i] * kf[i];
            d += __shfl_xor_sync(0xffffffffu, d, 1);
            d += __shfl_xor_sync(0xffffffffu, d, 2);
            d += __shfl_xor_sync(0xffffffffu, d, 4);
            s[h] = d;
        }
        if (valid) {
            float vf[16];
            const f16_t* vh = reinterpret_cast<const f16_t*>(vv);
#pragma unroll
            for (int i = 0; i < 16; i++) vf[i] = f16_to_f32(vh[i]);
#pragma unroll
            for (int h = 0; h < GQ_HEADS; h++) {
                const float m_new = fmaxf(m[h], s[h]), correction = exp2f(m[h] - m_new), p = exp2f(s[h] - m_new);
                l[h] = l[h] * correction + p;
#pragma unroll
                for (int i = 0; i < 16; i++) acc[h][i] = acc[h][i] * correction + p * vf[i];
                m[h] = m_new;
            }
        }
        kk[0] = nk[0]; kk[1] = nk[1]; vv[0] = nv[0]; vv[1] = nv[1];
        j = jn;
        valid = vn;
    }
    // merge the warp's 4 position groups (lanes 8 apart hold the same dimensions)
#pragma unroll
    for (int off = 8; off < 32; off <<= 1) {
#pragma unroll
        for (int h = 0; h < GQ_HEADS; h++) {
            const float m2 = __shfl_xor_sync(0xffffffffu, m[h], off), l2 = __shfl_xor_sync(0xffffffffu, l[h], off);
            const float mm = fmaxf(m[h], m2);
            const float c1 = m[h] == -INFINITY ? 0.f : exp2f(m[h] - mm), c2 = m2 == -INFINITY ? 0.f : exp2f(m2 - mm);
#pragma unroll
            for (int i = 0; i < 16; i++) acc[h][i] = acc[h][i] * c1 + __shfl_xor_sync(0xffffffffu, acc[h][i], off) * c2;
            l[h] = l[h] * c1 + l2 * c2;
            m[h] = mm;
        }
    }
    if (g == 0) {
#pragma unroll
        for (int h = 0; h < GQ_HEADS; h++) {
#pragma unroll
            for (int i = 0; i < 16; i++) s_acc[warp][h][sub * 16 + i] = acc[h][i];
            if (sub == 0) { s_m[warp][h] = m[h]; s_l[warp][h] = l[h]; }
        }
    }
    __syncthreads();
    const size_t th0 = (size_t)t * n_heads + kvh * group; // (token, first query head of this kv head)
    for (int idx = threadIdx.x; idx < group * GQ_D; idx += blockDim.x) {
        const int h = idx / GQ_D, d = idx % GQ_D;
        float M = -INFINITY, L = 0.f, O = 0.f;
        for (int w = 0; w < GQ_WARPS; w++) merge_partial<true>(M, L, O, s_m[w][h], s_l[w][h], s_acc[w][h][d]);
        if (splits == 1) {
            out[(th0 + h) * GQ_D + d] = f32_to_f16(O / L);
            continue;
        }
        part_o[((th0 + h) * splits + split) * GQ_D + d] = O;
        if (d == 0) { part_ml[((th0 + h) * splits + split) * 2] = M; part_ml[((th0 + h) * splits + split) * 2 + 1] = L; }
    }
    if (splits == 1) return;
    __threadfence(); // the partials are visible before this block counts itself in
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(&arrivals[th0], 1) == splits - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    for (int idx = threadIdx.x; idx < group * GQ_D; idx += blockDim.x) {
        const int h = idx / GQ_D, d = idx % GQ_D;
        const size_t th = th0 + h;
        float M = -INFINITY, L = 0.f, O = 0.f;
        for (int sp = 0; sp < splits; sp++)
            merge_partial<true>(M, L, O, __ldcg(&part_ml[(th * splits + sp) * 2]), __ldcg(&part_ml[(th * splits + sp) * 2 + 1]),
                           __ldcg(&part_o[(th * splits + sp) * GQ_D + d]));
        out[th * GQ_D + d] = f32_to_f16(O / L);
    }
    if (threadIdx.x == 0) arrivals[th0] = 0;
}

// ---------------------------------------------------------------------------------------------------------------
// attention_prefill: prompts on the tensor cores (FlashAttention-2 style), head_dim 128 only.
//
// Same inputs as attention_paged plus a list of query tiles. A tile is up to 64 tokens of ONE sequence with
// consecutive positions, contiguous in the batch: q_tiles[2i] = first token, q_tiles[2i + 1] = count (1..64); the
// kernel reads positions[first] and seq_of_token[first] and takes positions[first] + r for row r.
// Host rule for building the tiles (C# does the same): walk the batch's tokens in order and start a new tile at
// token t when t is the first token, or seq_of_token[t] != seq_of_token[t - 1], or positions[t] != positions[t - 1]
// + 1, or the current tile already has 64 tokens. (A decode token is then a tile of 1; a 512-token chunk 8 tiles.)
//
// Launch: grid (n_tiles, n_heads / PF_HEADS) (default PF_HEADS = 1: grid (n_tiles, n_heads)), block PF_HEADS · 128
// threads, no dynamic shared memory (32 KB static). Requires D == 128 (the block returns without writing otherwise:
// the caller must check), n_heads / n_kv divisible by PF_HEADS, q_stride even (rows are read as float2), block_size
// ≥ 1 (a power of two saves a division per row). Tiles run fastest: the blocks resident together are the tiles of
// one or two heads, so they read the same kv head's K/V (L2 holds one kv head's cache even at 32k positions, not all
// eight); block x takes tile n_tiles - 1 - x, so the longest tiles of a sequence (its last) start first and the
// short ones fill the tail.
//
// A block: PF_HEADS query heads (of one kv head) × 64 rows; warp w takes rows 16·(w % 4).. of head w / 4, its Q as
// mma A fragments in registers (fp16, pre-scaled by scale·log2 e), O (16 × 128 fp32) in registers. Per 64-position
// K/V tile: S = Q·Kᵀ (64 mma.sync m16n8k16 per warp, K by ldmatrix.x4), causal mask on the tiles that reach past the
// tile's first position, online softmax in the exp2 domain, P to fp16 A fragments in registers, O += P·V (64 mma, V
// by ldmatrix.x4.trans). K and V have one 16 KB buffer each (rows of 256 bytes, 16-byte chunk c of row r stored at
// c ^ (r % 8): cp.async writes and ldmatrix reads are conflict-free), loaded by cp.async in a staggered pipeline:
// V(t) loads while S(t) is computed, K(t + 1) while P·V(t) is. A warp whose rows are all past `count`, or whose
// last position is before a K/V tile, skips that tile's math but joins every load and barrier.

// Compile-time knobs, each measured on an H200 against the defaults in one device run (kernels/harness/
// decode_kernels.py --prefill-attention-only: C 512..4096 new tokens at the end of N 512..32768 positions), 2026-11-29:
//   PF_MIN_BLOCKS 2 (236 registers, no spills) beat 3 (168 registers, 16 bytes spilled) by 1-13% at every shape:
//     271.9 vs 261.8 TFLOP/s at C 4096, N 32768; 266.7 vs 237.5 at C 512, N 32768.
//   PF_KV 32 (3 blocks of 168 registers per SM, 12 warps) lost 6-24% to 64 (more barriers per mma, same ldmatrix bytes).
//   PF_HEADS 2 (two query heads of one kv head per block share the K/V tiles: half the L2 → shared traffic, but one
//     block of 8 warps per SM) lost 8-12%.
//   PF_AHEAD 2 (ldmatrix two steps before its mma) changed nothing (±1%), and neither did two tried and dropped (another
//     run): K double-buffered (48 KB static, K(t + 1) loading from the start of tile t) and skipping O's rescale by a
//     warp vote when no running max moved (±2%, noise).
// What separates this kernel (≈ 270 TFLOP/s) from torch's FlashAttention-2 (≈ 320, same shapes) is most likely the 16
// rows per warp: FA2's warps take 32 rows (Q re-read from shared memory), so each K/V fragment feeds twice the mma.
#define PF_ROWS 64 // query rows per head per block (4 warps × 16)
#ifndef PF_KV
#define PF_KV 64 // positions per K/V tile (32 or 64)
#endif
#define PF_NT (PF_KV / 8) // 8-position n-tiles of S per K/V tile
#define PF_D 128
#ifndef PF_HEADS
#define PF_HEADS 1 // query heads (of one kv head) per block, sharing each K/V tile
#endif
#ifndef PF_MIN_BLOCKS
#define PF_MIN_BLOCKS (PF_HEADS == 1 ? 2 : 1) // blocks per SM the register budget must allow
#endif

__device__ __forceinline__ void pf_cp_async16(unsigned smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem), "l"(gmem));
}
__device__ __forceinline__ void pf_cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void pf_cp_async_wait_all() { asm volatile("cp.async.wait_group 0;"); }

__device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
// two floats → f16x2 (lo in the low half, as the mma fragments want element pairs)
__device__ __forceinline__ unsigned pack_f16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

extern "C" __global__ void __launch_bounds__(PF_HEADS * 128, PF_MIN_BLOCKS) attention_prefill(
    const float* q, const f16_t* k_cache, const f16_t* v_cache, const int* positions, const int* seq_of_token,
    const int* block_tables, int max_blocks, f16_t* out, int n_heads, int n_kv, int D, int block_size, float scale, int q_stride,
    const int* q_tiles, int n_tiles) {
    __shared__ __align__(128) f16_t ks[PF_KV * PF_D];
    __shared__ __align__(128) f16_t vs[PF_KV * PF_D];
    if ((int)blockIdx.x >= n_tiles || D != PF_D) return;
    const int tile = n_tiles - 1 - blockIdx.x;
    const int first = q_tiles[2 * tile], count = q_tiles[2 * tile + 1];
    if (count <= 0) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, qd = lane & 3;
    const int head = blockIdx.y * PF_HEADS + (warp >> 2);
    const int kv_head = blockIdx.y * PF_HEADS / (n_heads / n_kv);
    const int kv_dim = n_kv * PF_D;
    const int pos0 = positions[first], pos_last = pos0 + count - 1, n_len = pos_last + 1;
    const int* table = block_tables + (size_t)seq_of_token[first] * max_blocks;
    const int kv_tiles = (n_len + PF_KV - 1) / PF_KV;
    const bool bs_pow2 = (block_size & (block_size - 1)) == 0;
    const int bs_shift = __ffs(block_size) - 1;

    // this warp's rows: r_lo = 16·(w % 4) + g and r_lo + 8; rows past count compute as the last row and store nothing
    const int row0 = (warp & 3) * 16, r_lo = row0 + g, r_hi = r_lo + 8;
    const int pos_lo = min(pos0 + r_lo, pos_last), pos_hi = min(pos0 + r_hi, pos_last);
    const bool active = row0 < count;
    const int warp_last = min(pos0 + row0 + 15, pos_last); // this warp's last position: tiles past it are all masked

    // Q → A fragments, scaled into the exp2 domain: qa[kc] covers dims 16kc.. (a0/a1: 16kc + 2qd, a2/a3: + 8)
    unsigned qa[8][4];
    {
        const float qs = scale * 1.4426950408889634f;
        const float* qlo = q + (size_t)(first + min(r_lo, count - 1)) * q_stride + head * PF_D + 2 * qd;
        const float* qhi = q + (size_t)(first + min(r_hi, count - 1)) * q_stride + head * PF_D + 2 * qd;
#pragma unroll
        for (int kc = 0; kc < 8; kc++) {
            const float2 a = *reinterpret_cast<const float2*>(qlo + 16 * kc);
            const float2 b = *reinterpret_cast<const float2*>(qhi + 16 * kc);
            const float2 c = *reinterpret_cast<const float2*>(qlo + 16 * kc + 8);
            const float2 d = *reinterpret_cast<const float2*>(qhi + 16 * kc + 8);
            qa[kc][0] = pack_f16x2(a.x * qs, a.y * qs);
            qa[kc][1] = pack_f16x2(b.x * qs, b.y * qs);
            qa[kc][2] = pack_f16x2(c.x * qs, c.y * qs);
            qa[kc][3] = pack_f16x2(d.x * qs, d.y * qs);
        }
    }

    const unsigned ks_base = (unsigned)__cvta_generic_to_shared(ks), vs_base = (unsigned)__cvta_generic_to_shared(vs);
    // cp.async: thread takes chunk c = tid % 16 of rows tid / 16 + 8·PF_HEADS·i (16 threads read one position's
    // 256 contiguous bytes); positions past the sequence's end load its last position (finite; masked to p = 0).
    // The cache rows of a K/V tile are looked up once (all table reads in flight together) for K and V.
    constexpr int LD_ROWS = PF_KV / (8 * PF_HEADS);
    const int ld_c = threadIdx.x & 15, ld_r = threadIdx.x >> 4;
    const f16_t* k_src = k_cache + kv_head * PF_D + ld_c * 8;
    const f16_t* v_src = v_cache + kv_head * PF_D + ld_c * 8;
    int slot[LD_ROWS];
    auto find_slots = [&](int kv0) {
        if (bs_pow2) {
#pragma unroll
            for (int i = 0; i < LD_ROWS; i++) {
                const int j = min(kv0 + ld_r + 8 * PF_HEADS * i, pos_last), blk = j >> bs_shift;
                slot[i] = (table[blk] << bs_shift) + (j & (block_size - 1));
            }
        } else {
#pragma unroll
            for (int i = 0; i < LD_ROWS; i++) {
                const int j = min(kv0 + ld_r + 8 * PF_HEADS * i, pos_last), blk = j / block_size;
                slot[i] = table[blk] * block_size + (j - blk * block_size);
            }
        }
    };
    auto load_tile = [&](const f16_t* src, unsigned dst) {
#pragma unroll
        for (int i = 0; i < LD_ROWS; i++) {
            const int r = ld_r + 8 * PF_HEADS * i;
            pf_cp_async16(dst + r * 256 + ((ld_c ^ (r & 7)) << 4), src + (size_t)slot[i] * kv_dim);
        }
    };
    // ldmatrix lane addresses. K (S = Q·Kᵀ, B non-transposed): n-tile nt = rows 8nt + (lane % 8), matrix m = lane / 8
    // is chunk 4kp + m (k-chunks 2kp, 2kp + 1) → stored at (4kp) ^ y, y = m ^ (lane % 8): kp = 2, 3 are kp = 0, 1
    // plus 128 bytes. V (O += P·V, B transposed): k-chunk kc = rows 16kc + 8(m % 2) + (lane % 8), chunk 2dp + m / 2
    // → (2dp) ^ y', y' = m / 2 ^ (lane % 8): dp = 4..7 are dp = 0..3 plus 128 bytes.
    const int m4 = lane >> 3, l8 = lane & 7;
    const int ky = m4 ^ l8;
    const unsigned k_lane = ks_base + l8 * 256;
    const unsigned kofs0 = ky << 4, kofs1 = (4 ^ ky) << 4;
    const int vy = (m4 >> 1) ^ l8;
    const unsigned v_lane = vs_base + ((m4 & 1) * 8 + l8) * 256;
    unsigned vofs[4];
#pragma unroll
    for (int i = 0; i < 4; i++) vofs[i] = ((2 * i) ^ vy) << 4;
    // step st of S: kp = st / PF_NT outer, n-tile nt = st % PF_NT inner (consecutive mma go to different accumulators)
    auto k_addr = [&](int st) {
        const int kp = st / PF_NT, nt = st % PF_NT;
        return k_lane + nt * 2048 + (kp & 1 ? kofs1 : kofs0) + (kp >> 1) * 128;
    };
    // step st of P·V: kc = st / 8, dp = st % 8
    auto v_addr = [&](int st) {
        const int kc = st >> 3, dp = st & 7;
        return v_lane + kc * 4096 + vofs[dp & 3] + (dp >> 2) * 128;
    };
#ifndef PF_AHEAD
#define PF_AHEAD 1
#endif
    constexpr int AHEAD = PF_AHEAD; // ldmatrix issued this many steps before its mma use

    float o[16][4];
#pragma unroll
    for (int n = 0; n < 16; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;

    find_slots(0);
    load_tile(k_src, ks_base);
    pf_cp_async_commit();
    for (int t = 0; t < kv_tiles; t++) {
        const int kv0 = t * PF_KV;
        pf_cp_async_wait_all();
        __syncthreads(); // K(t) is in; every warp is done with V(t - 1)
        load_tile(v_src, vs_base);
        pf_cp_async_commit();
        const bool work = active && kv0 <= warp_last;
        unsigned pa[PF_NT / 2][4];
        if (work) {
            float s[PF_NT][4];
#pragma unroll
            for (int nt = 0; nt < PF_NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            unsigned kb[AHEAD + 1][4];
#pragma unroll
            for (int st = 0; st < AHEAD; st++) ldsm_x4(k_addr(st), kb[st][0], kb[st][1], kb[st][2], kb[st][3]);
#pragma unroll
            for (int st = 0; st < 4 * PF_NT; st++) {
                if (st + AHEAD < 4 * PF_NT) {
                    unsigned* b = kb[(st + AHEAD) % (AHEAD + 1)];
                    ldsm_x4(k_addr(st + AHEAD), b[0], b[1], b[2], b[3]);
                }
                const int kp = st / PF_NT, nt = st % PF_NT;
                const unsigned* b = kb[st % (AHEAD + 1)];
                mma_f16(s[nt], qa[2 * kp][0], qa[2 * kp][1], qa[2 * kp][2], qa[2 * kp][3], b[0], b[1]);
                mma_f16(s[nt], qa[2 * kp + 1][0], qa[2 * kp + 1][1], qa[2 * kp + 1][2], qa[2 * kp + 1][3], b[2], b[3]);
            }
            if (kv0 + PF_KV - 1 > pos0) { // the diagonal (and the sequence's end): position j > the row's → -inf
#pragma unroll
                for (int nt = 0; nt < PF_NT; nt++) {
                    const int j = kv0 + nt * 8 + 2 * qd;
                    if (j > pos_lo) s[nt][0] = -INFINITY;
                    if (j + 1 > pos_lo) s[nt][1] = -INFINITY;
                    if (j > pos_hi) s[nt][2] = -INFINITY;
                    if (j + 1 > pos_hi) s[nt][3] = -INFINITY;
                }
            }
            // online softmax; every row has position 0 in tile 0, so the running max is finite from then on
            float mx_lo = m_lo, mx_hi = m_hi;
#pragma unroll
            for (int nt = 0; nt < PF_NT; nt++) {
                mx_lo = fmaxf(mx_lo, fmaxf(s[nt][0], s[nt][1]));
                mx_hi = fmaxf(mx_hi, fmaxf(s[nt][2], s[nt][3]));
            }
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
            const float c_lo = fast_exp2(m_lo - mx_lo), c_hi = fast_exp2(m_hi - mx_hi); // 0 on the first tile
            m_lo = mx_lo;
            m_hi = mx_hi;
            float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
            for (int nt = 0; nt < PF_NT; nt++) {
                const float p0 = fast_exp2(s[nt][0] - mx_lo), p1 = fast_exp2(s[nt][1] - mx_lo);
                const float p2 = fast_exp2(s[nt][2] - mx_hi), p3 = fast_exp2(s[nt][3] - mx_hi);
                sum_lo += p0 + p1;
                sum_hi += p2 + p3;
                // C fragment of n-tile nt → A fragment of k-chunk nt / 2 (regs 0/1 from even n-tiles, 2/3 from odd)
                pa[nt >> 1][(nt & 1) * 2] = pack_f16x2(p0, p1);
                pa[nt >> 1][(nt & 1) * 2 + 1] = pack_f16x2(p2, p3);
            }
            l_lo = l_lo * c_lo + sum_lo; // this lane's partial row sums; the 4 lanes of a row add up at the end
            l_hi = l_hi * c_hi + sum_hi;
#pragma unroll
            for (int n = 0; n < 16; n++) {
                o[n][0] *= c_lo; o[n][1] *= c_lo;
                o[n][2] *= c_hi; o[n][3] *= c_hi;
            }
        }
        pf_cp_async_wait_all();
        __syncthreads(); // V(t) is in; every warp is done with K(t)
        if (t + 1 < kv_tiles) {
            find_slots(kv0 + PF_KV);
            load_tile(k_src, ks_base);
        }
        pf_cp_async_commit();
        if (work) {
            unsigned vb[AHEAD + 1][4];
#pragma unroll
            for (int st = 0; st < AHEAD; st++) ldsm_x4_trans(v_addr(st), vb[st][0], vb[st][1], vb[st][2], vb[st][3]);
#pragma unroll
            for (int st = 0; st < PF_KV / 2; st++) {
                if (st + AHEAD < PF_KV / 2) {
                    unsigned* b = vb[(st + AHEAD) % (AHEAD + 1)];
                    ldsm_x4_trans(v_addr(st + AHEAD), b[0], b[1], b[2], b[3]);
                }
                const int kc = st >> 3, dp = st & 7;
                const unsigned* b = vb[st % (AHEAD + 1)];
                mma_f16(o[2 * dp], pa[kc][0], pa[kc][1], pa[kc][2], pa[kc][3], b[0], b[1]);
                mma_f16(o[2 * dp + 1], pa[kc][0], pa[kc][1], pa[kc][2], pa[kc][3], b[2], b[3]);
            }
        }
    }
    if (!active) return;
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
    const float inv_lo = 1.f / l_lo, inv_hi = 1.f / l_hi;
    f16_t* out_lo = out + (size_t)(first + r_lo) * n_heads * PF_D + head * PF_D + 2 * qd;
    f16_t* out_hi = out + (size_t)(first + r_hi) * n_heads * PF_D + head * PF_D + 2 * qd;
#pragma unroll
    for (int n = 0; n < 16; n++) {
        if (r_lo < count) *reinterpret_cast<unsigned*>(out_lo + n * 8) = pack_f16x2(o[n][0] * inv_lo, o[n][1] * inv_lo);
        if (r_hi < count) *reinterpret_cast<unsigned*>(out_hi + n * 8) = pack_f16x2(o[n][2] * inv_hi, o[n][3] * inv_hi);
    }
}
