// The next token of each logit row, chosen on the device so that only token ids leave the GPU: what the engine's
// Sampler does with top-k and top-p off. Temperature 0: argmax (the first of equal maxima, as torch.argmax).
// Otherwise p_i = exp(l_i / t − max_j l_j / t) (fp32, as the host), and the token is the first whose cumulative p
// exceeds u · Σp, u in [0, 1) the engine's own draw from the request's seeded generator — so a seed gives the
// same text on either side, up to rounding at the very edge of a token's share.
//
// One block of SAMPLE_THREADS per row; each thread owns a contiguous run of the vocabulary: a block-wide max, sums in
// double, an exclusive scan of the threads' sums, then the one thread whose run holds the target walks it.
#include "common.cuh"

#define SAMPLE_THREADS 1024

// The warp's largest value and its first index (lowest index among equals).
__device__ __forceinline__ void warp_argmax(float& best, int& at) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffffu, best, o);
        const int j = __shfl_xor_sync(0xffffffffu, at, o);
        if (v > best || (v == best && j < at)) { best = v; at = j; }
    }
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_rows(const float* logits, int V, const float* temperatures,
                                                                        const double* uniforms, int* tokens) {
    __shared__ float s_val[32];
    __shared__ int s_idx[32];
    __shared__ double s_sum[32];
    __shared__ int s_hit;
    const int row = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const float* l = logits + (size_t)row * V;
    const float t = temperatures[row];
    const int run = (V + blockDim.x - 1) / blockDim.x, i0 = min(V, tid * run), i1 = min(V, i0 + run);

    // the largest logit and its first index (dividing by t > 0 keeps the order; the host's max is of l / t)
    float best = -INFINITY;
    int at = 0x7fffffff;
    for (int i = i0; i < i1; i++)
        if (l[i] > best) { best = l[i]; at = i; }
    warp_argmax(best, at);
    if (lane == 0) { s_val[warp] = best; s_idx[warp] = at; }
    __syncthreads();
    if (warp == 0) {
        best = lane < warps ? s_val[lane] : -INFINITY;
        at = lane < warps ? s_idx[lane] : 0x7fffffff;
        warp_argmax(best, at);
        if (lane == 0) { s_val[0] = best; s_idx[0] = at; }
    }
    __syncthreads();
    if (t == 0.f) {
        if (tid == 0) tokens[row] = s_idx[0];
        return;
    }
    const float max_scaled = s_val[0] / t;

    // this thread's share, then an exclusive scan over the block (warp shuffles, then the warps' totals)
    double mine = 0.0;
    for (int i = i0; i < i1; i++) mine += (double)expf(l[i] / t - max_scaled);
    double incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const double v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
    }
    if (lane == 31) s_sum[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        double w = lane < warps ? s_sum[lane] : 0.0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const double v = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += v;
        }
        s_sum[lane] = w; // inclusive over warps
    }
    if (tid == 0) s_hit = 0x7fffffff;
    __syncthreads();
    const double before_warp = warp > 0 ? s_sum[warp - 1] : 0.0;
    const double total = s_sum[warps - 1];
    const double target = uniforms[row] * total;
    const double excl = before_warp + incl - mine;
    // the first thread whose run takes the cumulative sum past the target
    if (excl + mine > target && mine > 0.0) atomicMin(&s_hit, tid);
    __syncthreads();
    if (s_hit == 0x7fffffff) { // rounding put the target at the very end: the last token, as the host does
        if (tid == 0) tokens[row] = V - 1;
        return;
    }
    if (tid != s_hit) return;
    double u = target - excl;
    int pick = i1 - 1;
    for (int i = i0; i < i1; i++)
        if ((u -= (double)expf(l[i] / t - max_scaled)) < 0.0) { pick = i; break; }
    tokens[row] = pick;
}
