// Tensor-core building blocks for W8A16 (int8 weights, fp16 activations, fp32 accumulation) and bf16 weights
// (converted to fp16 in registers): one warp-level mma.sync m16n8k16 (A = 16 weight rows × 16 k, B = 16 k × 8 tokens, C = 16 rows × 8 tokens,
// fp32), and exact int8 → fp16 conversion in registers.
//
// Fragment layout (PTX ISA, m16n8k16 .f16/.bf16), g = lane / 4, q = lane % 4:
//   A regs {a0, a1, a2, a3} = rows {g, g+8, g, g+8}, k pairs {2q, 2q, 8+2q, 8+2q} (+0, +1 in each half)
//   B regs {b0, b1}         = token g, k pairs {2q, 8+2q}
//   C      {c0, c1, c2, c3} = (row g, token 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1)
// A dot product does not care which k is which as long as A and B agree, so every kernel here maps the mma's
// logical k to actual columns such that each lane reads 16 contiguous bytes of its weight rows and of its
// token's activations: mma j of a 64-column int8 unit takes, for lane q, columns 16q + 4j + {0, 1} (logical
// 2q, 2q+1) and 16q + 4j + {2, 3} (logical 8+2q, 9+2q) — i.e. bytes 0-1 and 2-3 of 32-bit word j.
#pragma once
#include "common.cuh"

__device__ __forceinline__ void mma_f16(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Four int8 (one 32-bit word) → two f16x2, exactly: bias each byte to 0..255, place it in the mantissa of
// fp16 1024 (0x6400 | b = 1024 + b), subtract 1152 = 1024 + 128. lo = bytes 0, 1; hi = bytes 2, 3.
// Two byte permutes and two packed subtractions for four weights: no int→float conversion unit involved.
__device__ __forceinline__ void i8x4_to_f16x2(unsigned w, unsigned& lo, unsigned& hi) {
    const unsigned u = w ^ 0x80808080u;
    lo = __byte_perm(u, 0x64646464u, 0x5140);
    hi = __byte_perm(u, 0x64646464u, 0x7362);
    asm("sub.f16x2 %0, %0, %1;" : "+r"(lo) : "r"(0x64806480u));
    asm("sub.f16x2 %0, %0, %1;" : "+r"(hi) : "r"(0x64806480u));
}

// bf16x2 weights → f16x2, so bf16 weights multiply the same fp16 activations as int8 ones (exact for weights in
// fp16's normal range; bf16 activations would cost 3 bits of precision against the fp32 reference).
__device__ __forceinline__ unsigned bf16x2_to_f16x2(unsigned w) {
    const float lo = __uint_as_float(w << 16), hi = __uint_as_float(w & 0xffff0000u);
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ unsigned word_of(const int4& v, int i) {
    return i == 0 ? (unsigned)v.x : i == 1 ? (unsigned)v.y : i == 2 ? (unsigned)v.z : (unsigned)v.w;
}

// The A fragment of mma j of a unit from this lane's 16 weight bytes of rows g (wg) and g+8 (wg8): int8 units hold
// 4 mma (j < 4), bf16 units 2 (j < 2).
template <bool INT8>
__device__ __forceinline__ void a_fragment(const int4& wg, const int4& wg8, int j, unsigned& a0, unsigned& a1, unsigned& a2, unsigned& a3) {
    if (INT8) {
        i8x4_to_f16x2(word_of(wg, j), a0, a2);
        i8x4_to_f16x2(word_of(wg8, j), a1, a3);
    } else {
        a0 = bf16x2_to_f16x2(word_of(wg, 2 * j));
        a1 = bf16x2_to_f16x2(word_of(wg8, 2 * j));
        a2 = bf16x2_to_f16x2(word_of(wg, 2 * j + 1));
        a3 = bf16x2_to_f16x2(word_of(wg8, 2 * j + 1));
    }
}

// One unit of a warp's skinny product: 16·MT weight rows × 8·NT tokens over 64 (int8) or 32 (bf16) columns.
// wg[m], wg8[m]: this lane's 16 weight bytes of rows g and g+8 of m-tile m (columns 16q.. of the unit for int8,
// 8q.. for bf16); xv[n][0..1]: 32 bytes (int8 unit: 16 fp16 columns 16q..) or xv[n][0] 16 bytes (bf16 unit:
// 8 columns 8q..) of token g of n-tile n. acc[m][n] is the C fragment.
template <int MT, int NT, bool INT8>
__device__ __forceinline__ void mma_unit(const int4 (&wg)[MT], const int4 (&wg8)[MT], const int4 (&xv)[NT][2], float (&acc)[MT][NT][4]) {
#pragma unroll
    for (int j = 0; j < (INT8 ? 4 : 2); j++) {
        unsigned a0[MT], a1[MT], a2[MT], a3[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) a_fragment<INT8>(wg[m], wg8[m], j, a0[m], a1[m], a2[m], a3[m]);
#pragma unroll
        for (int n = 0; n < NT; n++) {
            // int8: mma j takes words 2j', 2j'+1 of 16-byte half j/2 of the token's 32 bytes; bf16: words 2j, 2j+1 of its 16
            const int4& half = xv[n][INT8 ? j >> 1 : 0];
            const int w = INT8 ? (j & 1) * 2 : 2 * j;
            const unsigned b0 = word_of(half, w), b1 = word_of(half, w + 1);
#pragma unroll
            for (int m = 0; m < MT; m++) mma_f16(acc[m][n], a0[m], a1[m], a2[m], a3[m], b0, b1);
        }
    }
}

// Weights are streamed once per step through the read-only path. (Asking L2 for 256-byte blocks around each access
// helped row-major weights in isolation and hurt them in a whole decode step; with the tiled layout it changed
// nothing — H100, kernels/harness/decode_kernels.py, same run: 5.89 / 5.90 ms a step — so it is gone.)
__device__ __forceinline__ int4 load_weights(const char* p) { return __ldg(reinterpret_cast<const int4*>(p)); }

// Weight layout. A "unit" is what one warp multiplies at a time: 16 rows × 64 bytes (4 lanes × 16 bytes per
// row; 64 int8 or 32 bf16 columns). TILED_WEIGHTS (the layout the loader writes, tile_rows_16 in quant.cu)
// stores each 16-row tile unit by unit, 1 KB each: [rows g: lane-ordered 16-byte pieces][rows g+8: same], so a
// warp's load is 512 contiguous bytes and a warp's run of units is one contiguous span of memory. Row-major
// (TILED_WEIGHTS=0, kept for the harness's comparison) makes every warp load eight 64-byte pieces of eight rows:
// a whole decode step took 6.77 ms against 5.90 tiled (H100, same run).
#ifndef TILED_WEIGHTS
#define TILED_WEIGHTS 1
#endif
#define UNIT_STRIDE (TILED_WEIGHTS ? 1024 : 64)
#define UNIT_COLS(INT8) ((INT8) ? 64 : 32)

// This lane's pointers to unit 0 of rows g and g+8 of the 16-row tile that starts at row r0 (a multiple of 16) of a
// [rows, C] weight matrix of esize-byte elements.
__device__ __forceinline__ void tile_pointers(const char* W, int r0, int C, int esize, const char*& pg, const char*& pg8) {
    const int lane = threadIdx.x & 31;
#if TILED_WEIGHTS
    const char* tile = W + (size_t)(r0 / 16) * ((size_t)C * esize / 64) * 1024;
    pg = tile + lane * 16;
    pg8 = tile + 512 + lane * 16;
#else
    const size_t row_bytes = (size_t)C * esize;
    pg = W + (size_t)(r0 + (lane >> 2)) * row_bytes + (lane & 3) * 16;
    pg8 = pg + 8 * row_bytes;
#endif
}

// This lane's loads for unit u: its weight pieces of every m-tile and its token's activations of every n-tile.
template <int MT, int NT, bool INT8>
__device__ __forceinline__ void load_unit(const char* const (&pg)[MT], const char* const (&pg8)[MT], const f16_t* const (&xrow)[NT], int u,
                                          int4 (&wg)[MT], int4 (&wg8)[MT], int4 (&xv)[NT][2]) {
    constexpr int ucols = UNIT_COLS(INT8);
    const int col = u * ucols + (threadIdx.x & 3) * (ucols / 4);
#pragma unroll
    for (int m = 0; m < MT; m++) {
        wg[m] = load_weights(pg[m] + (size_t)u * UNIT_STRIDE);
        wg8[m] = load_weights(pg8[m] + (size_t)u * UNIT_STRIDE);
    }
#pragma unroll
    for (int n = 0; n < NT; n++) {
        const int4* xp = reinterpret_cast<const int4*>(xrow[n] + col);
        xv[n][0] = xp[0];
        xv[n][1] = INT8 ? xp[1] : make_int4(0, 0, 0, 0);
    }
}

// A warp's whole skinny product over units [u0, u1) of its tiles: loads UNROLL units ahead (each lane keeps
// 2·MT + 2·NT 16-byte loads in flight per unit), then multiplies. pg[m] / pg8[m]: tile_pointers of m-tile m;
// xrow[n]: fp16 row of token g of n-tile n (rows of length C).
template <int MT, int NT, bool INT8, int UNROLL>
__device__ __forceinline__ void skinny_warp(const char* const (&pg)[MT], const char* const (&pg8)[MT],
                                            const f16_t* const (&xrow)[NT], int u0, int u1, float (&acc)[MT][NT][4]) {
    int u = u0;
    for (; u + UNROLL <= u1; u += UNROLL) {
        int4 wg[UNROLL][MT], wg8[UNROLL][MT], xv[UNROLL][NT][2];
#pragma unroll
        for (int s = 0; s < UNROLL; s++) load_unit<MT, NT, INT8>(pg, pg8, xrow, u + s, wg[s], wg8[s], xv[s]);
#pragma unroll
        for (int s = 0; s < UNROLL; s++) mma_unit<MT, NT, INT8>(wg[s], wg8[s], xv[s], acc);
    }
    for (; u < u1; u++) {
        int4 wg[MT], wg8[MT], xv[NT][2];
        load_unit<MT, NT, INT8>(pg, pg8, xrow, u, wg, wg8, xv);
        mma_unit<MT, NT, INT8>(wg, wg8, xv, acc);
    }
}

// Adds the SPLIT warps' C fragments of a block (each warp took a slice of the columns) in a fixed tree order
// (deterministic), through SPLIT/2 · MT·NT·128 floats of shared memory: afterwards warp 0's acc holds the
// block's totals. Call from all threads; SPLIT a power of two.
template <int MT, int NT, int SPLIT>
__device__ __forceinline__ void reduce_split(float (&acc)[MT][NT][4], float* red /* [SPLIT/2][MT·NT·128] */) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    constexpr int per = MT * NT * 128;
#pragma unroll
    for (int s = SPLIT / 2; s >= 1; s >>= 1) {
        if (warp >= s && warp < 2 * s) {
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int n = 0; n < NT; n++)
#pragma unroll
                    for (int i = 0; i < 4; i++) red[(warp - s) * per + ((m * NT + n) * 32 + lane) * 4 + i] = acc[m][n][i];
        }
        __syncthreads();
        if (warp < s) {
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int n = 0; n < NT; n++)
#pragma unroll
                    for (int i = 0; i < 4; i++) acc[m][n][i] += red[warp * per + ((m * NT + n) * 32 + lane) * 4 + i];
        }
        __syncthreads();
    }
}

// Where C fragment element i of this lane sits: row offset within the 16-row tile, token offset within the 8.
__device__ __forceinline__ int frag_row(int i) { return ((threadIdx.x & 31) >> 2) + (i >= 2 ? 8 : 0); }
__device__ __forceinline__ int frag_token(int i) { return 2 * (threadIdx.x & 3) + (i & 1); }
