// Prompt products on Hopper's warpgroup tensor cores (wgmma, sm_90a only; other cards use gemm.cu): Y = X · Wᵀ with
// int8 weights in mma.cuh's tiled layout, per-row fp32 scales applied in the epilogue, fp16 activations, fp32
// accumulation. Same three products and epilogues as gemm.cu (dense, experts gate/up + SiLU, experts down).
//
// Roles: wgmma computes D[64 rows, N] += A[64, 16] · B[16, N] with A from registers and B from shared memory, so A is
// the weights (converted int8 → fp16 in registers exactly as mma.sync takes them: a_fragment of mma.cuh) and B the
// tokens. A block is 3 warpgroups over 256 weight rows × BN tokens (BN = 128 for prompts; 64 and 32 for decode steps
// of up to 128 sequences, whose experts see few tokens each: a 128-token tile there computes 4-8× the products the
// step needs, and a decode step must run at the weight-read limit):
//   warpgroup 0 (producer, few registers): per 64-column unit, cp.async copies bring the BN token rows into shared
//     memory where wgmma's B wants them; WGG_STAGES units deep, full/empty mbarriers per stage.
//   warpgroups 1, 2 (consumers, 232 registers): each owns two 64-row m-tiles (BN accumulators per thread), loads its
//     weights from global memory AHEAD units ahead (more for small BN, where weight reads bound the loop), converts,
//     issues 8 wgmma per unit.
// B layout: the tiled weights pair column 16q + 4j + {0,1} with the mma's logical k (2q, 2q+1) and 16q + 4j + {2,3}
// with (8 + 2q, 9 + 2q) (mma.cuh), so wgmma's B must hold the tokens' columns in that logical order. The inputs come
// already in it (permute_units_f16 below; the gate/up epilogue writes h so): within each 64-column unit, word
// (fp16 pair) 8j + w holds pair 8(w % 4) + 2j + w / 4 — k-step j's 16 logical k as 32 contiguous bytes. Then a token's
// unit is 128 contiguous bytes that 16-byte cp.async copies place as rows of a 128-byte-swizzled tile (chunk c of
// row n at c ^ (n % 8)), which wgmma reads without bank conflicts. (4-byte copies doing the permutation on the way
// in kept a unit at ≈ 3,300 cycles instead of ≈ 1,000: H200, harness, 2026-11-29.)
#include "mma.cuh"

#define WGG_TOKENS 128                   // most tokens per block (BN); stages are laid out for this many whatever BN
#define WGG_ROWS 256                     // M: weight rows per block (2 consumer warpgroups × 2 m64 tiles)
#define WGG_TILES (WGG_ROWS / 16)        // 16-row weight tiles per block
#ifndef WGG_STAGES
#define WGG_STAGES 6
#endif
#define WGG_LAG 2                        // units of token copies the producer keeps in flight before it reports one done
// one stage: a unit (64 fp16 columns) of BN token rows
#define WGG_THREADS 384
// dynamic shared memory a launch of token tile BN must give: stages, barriers, token row pointers, room to align to 1 KB
#define WGG_SMEM_FOR(BN) (WGG_STAGES * (BN) * 128 + 2 * WGG_STAGES * 8 + (BN) * 8 + 1024)
#define WGG_SMEM WGG_SMEM_FOR(WGG_TOKENS)

typedef unsigned long long u64;

__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
    unsigned done = 0;
    while (!done)
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
// shared memory written through the generic proxy (cp.async) is read next by wgmma (the async proxy)
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
// keeps a register in place across an asynchronous wgmma that reads or writes it (the compiler cannot see that)
__device__ __forceinline__ void keep(unsigned& r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ void keep(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// Shared-memory matrix descriptor of a K-major B tile with 128-byte swizzle: rows of 128 bytes, 8-row groups 1 KB apart
// (stride byte offset), the tile 1 KB aligned. Fields (PTX ISA, wgmma matrix descriptor): address >> 4 in bits 0-13,
// leading byte offset >> 4 in 16-29 (unused with this swizzle: 1), stride byte offset >> 4 in 32-45, swizzle mode in 62-63.
__device__ __forceinline__ u64 b_descriptor(unsigned addr) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

// D[64 rows, 128 tokens] += A (this warp's 16 rows × 16 k in registers, mma.sync's A layout) · B (descriptor)
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], const unsigned (&a)[4], u64 desc) {
    asm volatile("{\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
                 "{%64, %65, %66, %67}, %68, 1, 1, 1, 0;\n"
                 "}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], const unsigned (&a)[4], u64 desc) {
    asm volatile("{\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
                 "{%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n"
                 "}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}
__device__ __forceinline__ void wgmma_m64n32k16(float (&d)[16], const unsigned (&a)[4], u64 desc) {
    asm volatile("{\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
                 "{%16, %17, %18, %19}, %20, 1, 1, 1, 0;\n"
                 "}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}

// D[64 rows, BN tokens] += A · B: the instruction of the block's token tile
template <int BN> __device__ __forceinline__ void wgmma_tile(float (&d)[BN / 2], const unsigned (&a)[4], u64 desc);
template <> __device__ __forceinline__ void wgmma_tile<128>(float (&d)[64], const unsigned (&a)[4], u64 desc) { wgmma_m64n128k16(d, a, desc); }
template <> __device__ __forceinline__ void wgmma_tile<64>(float (&d)[32], const unsigned (&a)[4], u64 desc) { wgmma_m64n64k16(d, a, desc); }
template <> __device__ __forceinline__ void wgmma_tile<32>(float (&d)[16], const unsigned (&a)[4], u64 desc) { wgmma_m64n32k16(d, a, desc); }

// Accumulator element i of this thread (wgmma's D layout, per warp like mma.sync's C, for any N): row within the
// warpgroup's 64, token within the tile.
__device__ __forceinline__ int acc_row(int i) { return ((threadIdx.x >> 5) & 3) * 16 + ((threadIdx.x & 31) >> 2) + ((i & 2) ? 8 : 0); }
__device__ __forceinline__ int acc_token(int i) { return (i >> 2) * 8 + 2 * (threadIdx.x & 3) + (i & 1); }

// The main loop of one block. W tile t (0..15) of this block starts at w_tile[t] (C/64 units of 1 KB each); token n's
// fp16 row (length C) at x_row[n] (rows past the last token repeat a valid one). Consumers end with acc[m] = the
// unscaled products of m-tile m: warpgroup c's m-tile m covers block tiles 8c + 4m .. 8c + 4m + 3.
struct Stage {
    unsigned char* x; // [WGG_STAGES][BN · 128]
    u64* full;        // [WGG_STAGES]: the unit's tokens are in
    u64* empty;       // [WGG_STAGES]: both consumer warpgroups are done with them
    const char** rows;
};

template <int BN>
__device__ __forceinline__ Stage carve_shared() {
    extern __shared__ unsigned char wgg_smem[];
    const unsigned base = smem_addr(wgg_smem);
    unsigned char* p = wgg_smem + ((1024 - (base & 1023)) & 1023); // the 128-byte swizzle is on address bits: align to 1 KB
    Stage s;
    s.x = p;
    s.full = reinterpret_cast<u64*>(p + WGG_STAGES * BN * 128);
    s.empty = s.full + WGG_STAGES;
    s.rows = reinterpret_cast<const char**>(s.empty + WGG_STAGES);
    return s;
}

// Producer warpgroup: fills stage u % S with unit u of the BN token rows, for u < units.
template <int BN>
__device__ __forceinline__ void produce(const Stage& st, int units) {
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    const unsigned x0 = smem_addr(st.x);
    const int chunk = lane & 7; // a warp copies 4 token rows of 8 chunks per instruction, BN / 4 rows in all
    for (int u = 0; u < units; u++) {
        const int s = u % WGG_STAGES;
        if (u >= WGG_STAGES) mbar_wait(smem_addr(&st.empty[s]), ((u / WGG_STAGES) + 1) & 1);
        const unsigned xs = x0 + s * BN * 128;
#pragma unroll
        for (int i = 0; i < BN / 16; i++) {
            const int n = warp * (BN / 4) + i * 4 + (lane >> 3);
            cp_async16(xs + n * 128 + ((chunk ^ (n & 7)) << 4), st.rows[n] + (size_t)u * 128 + chunk * 16);
        }
        cp_async_commit();
        if (u >= WGG_LAG) {
            cp_async_wait<WGG_LAG>();
            fence_proxy_async();
            mbar_arrive(smem_addr(&st.full[(u - WGG_LAG) % WGG_STAGES]));
        }
    }
    cp_async_wait<0>();
    fence_proxy_async();
    for (int u = max(0, units - WGG_LAG); u < units; u++) mbar_arrive(smem_addr(&st.full[u % WGG_STAGES]));
}

// Consumer warpgroup c (0, 1): acc[m] over all units. Its warps' weights come straight from global memory into
// registers, AHEAD units ahead (a tiled unit is 512 contiguous bytes per warp load): through shared memory as 1 KB bulk
// copies they held a unit at ≈ 1,900 cycles (H200, harness, 2026-11-29), and they would add to wgmma's own
// shared-memory reads.
template <int BN, int AHEAD>
__device__ __forceinline__ void consume(const Stage& st, const char* const (&w_tile)[WGG_TILES], int c, int units, float (&acc)[2][BN / 2]) {
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    const unsigned x0 = smem_addr(st.x);
    const char* pg[2];
#pragma unroll
    for (int m = 0; m < 2; m++) pg[m] = w_tile[8 * c + 4 * m + warp] + lane * 16; // rows g; rows g + 8 are 512 bytes on
    auto load = [&](int u, int4 (&w)[2][2]) {
#pragma unroll
        for (int m = 0; m < 2; m++) {
            w[m][0] = load_weights(pg[m] + (size_t)u * 1024);
            w[m][1] = load_weights(pg[m] + (size_t)u * 1024 + 512);
        }
    };
    // one unit: convert its weights, start loading the unit AHEAD on into the same registers, 8 wgmma
    auto unit = [&](int u, int4 (&w)[2][2]) {
        const int s = u % WGG_STAGES;
        unsigned a[2][4][4];
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int j = 0; j < 4; j++) a_fragment<true>(w[m][0], w[m][1], j, a[m][j][0], a[m][j][1], a[m][j][2], a[m][j][3]);
        if (u + AHEAD < units) load(u + AHEAD, w);
        mbar_wait(smem_addr(&st.full[s]), (u / WGG_STAGES) & 1);
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int i = 0; i < BN / 2; i++) keep(acc[m][i]);
        wgmma_fence();
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const u64 desc = b_descriptor(x0 + s * BN * 128 + 32 * j);
#pragma unroll
            for (int m = 0; m < 2; m++) wgmma_tile<BN>(acc[m], a[m][j], desc);
        }
        wgmma_commit();
        wgmma_wait_all();
#pragma unroll
        for (int m = 0; m < 2; m++) {
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int r = 0; r < 4; r++) keep(a[m][j][r]);
#pragma unroll
            for (int i = 0; i < BN / 2; i++) keep(acc[m][i]);
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(smem_addr(&st.empty[s]));
    };
    int4 w[AHEAD][2][2];
#pragma unroll
    for (int a = 0; a < AHEAD; a++)
        if (a < units) load(a, w[a]);
    for (int u = 0; u < units; u += AHEAD) {
#pragma unroll
        for (int a = 0; a < AHEAD; a++)
            if (u + a < units) unit(u + a, w[a]);
    }
}

// Block set-up shared by the three products, then the roles: `units` 64-column units from w_tile[] and the token rows.
// Returns true in consumer threads (acc is then valid).
template <int BN, int AHEAD, int CTAS>
__device__ __forceinline__ bool wgmma_block(const char* const (&w_tile)[WGG_TILES], const char* const x_row_of_thread, int units,
                                            float (&acc)[2][BN / 2]) {
    const Stage st = carve_shared<BN>();
    if (threadIdx.x < BN) st.rows[threadIdx.x] = x_row_of_thread;
    if (threadIdx.x == 0) {
        for (int s = 0; s < WGG_STAGES; s++) {
            mbar_init(smem_addr(&st.full[s]), 128); // every producer thread, once its copies of the unit are done
            mbar_init(smem_addr(&st.empty[s]), 8);  // every consumer warp
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    const int wg = threadIdx.x >> 7;
    if (wg == 0) {
        if constexpr (CTAS == 1) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
        else asm volatile("setmaxnreg.dec.sync.aligned.u32 32;");
        produce<BN>(st, units);
        return false;
    }
    // one block an SM: 232 for the consumers; two (small tiles, latency hidden by the other block): 384 × 80 split as
    // 128 × 32 + 256 × 104
    if constexpr (CTAS == 1) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    else asm volatile("setmaxnreg.inc.sync.aligned.u32 104;");
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int i = 0; i < BN / 2; i++) acc[m][i] = 0.f;
    consume<BN, AHEAD>(st, w_tile, wg - 1, units, acc);
    return true;
}

// Where fp16 column c of a row goes in the wgmma input order (the B layout above): pair i = c / 2 of its unit moves
// to 8j + w, with i = 8q + 2j + b and w = q + 4b.
__device__ __forceinline__ int wgmma_column(int c) {
    const int unit = c >> 6, i = (c >> 1) & 31;
    const int j = (i & 7) >> 1, w = (i >> 3) + 4 * (i & 1);
    return unit * 64 + 2 * (8 * j + w) + (c & 1);
}

// y = x with every row's columns in the wgmma input order. grid T, block 256; C a multiple of 64.
extern "C" __global__ void permute_units_f16(const f16_t* x, f16_t* y, int T, int C) {
    const unsigned* xr = reinterpret_cast<const unsigned*>(x + (size_t)blockIdx.x * C);
    unsigned* yr = reinterpret_cast<unsigned*>(y + (size_t)blockIdx.x * C);
    for (int p = threadIdx.x; p < C / 2; p += blockDim.x) yr[wgmma_column(2 * p) >> 1] = xr[p];
}

// Dense: y[t, r] (+)= scale[r] · Σ_c W[r, c] x[t, c], x in the wgmma input order. grid (ceil(T / BN), ceil(R / 256)):
// token tiles fastest, so the blocks that share a row block's weights run together.
template <int BN, int AHEAD, int CTAS>
__device__ __forceinline__ void dense_tile(const signed char* W, const float* scales, const f16_t* x, float* y, int T, int R, int C, int accumulate,
                                           int t0) {
    const int r0 = blockIdx.y * WGG_ROWS;
    const char* w_tile[WGG_TILES];
#pragma unroll
    for (int t = 0; t < WGG_TILES; t++) // tiles past the last row read the last one again and store nothing
        w_tile[t] = reinterpret_cast<const char*>(W) + (size_t)min(r0 / 16 + t, R / 16 - 1) * (C / 64) * 1024;
    const char* xr = reinterpret_cast<const char*>(x + (size_t)min(t0 + (int)threadIdx.x, T - 1) * C);
    float acc[2][BN / 2];
    if (!wgmma_block<BN, AHEAD, CTAS>(w_tile, xr, C / 64, acc)) return;
    const int c = (threadIdx.x >> 7) - 1;
    // 16 elements at a time: their old values (accumulate) are loaded together, not one round trip per element
    // (the o projection's epilogue took 99 µs against 58 for the larger qkv: ncu, H200, 512 tokens)
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int i0 = 0; i0 < BN / 2; i0 += 16) {
            float old[16];
#pragma unroll
            for (int k = 0; k < 16; k++) {
                const int r = r0 + 128 * c + 64 * m + acc_row(i0 + k), t = t0 + acc_token(i0 + k);
                old[k] = accumulate && r < R && t < T ? y[(size_t)t * R + r] : 0.f;
            }
#pragma unroll
            for (int k = 0; k < 16; k++) {
                const int r = r0 + 128 * c + 64 * m + acc_row(i0 + k), t = t0 + acc_token(i0 + k);
                if (r < R && t < T) y[(size_t)t * R + r] = old[k] + acc[m][i0 + k] * scales[r];
            }
        }
}

// A block's tokens (n ≤ BN) on the narrowest wgmma that holds them: a 128-token kernel computes the remainder tile of a
// prompt (an expert's last few slots past its full tiles: ≈ 4 of the ≈ 11 expert tiles of a 512-token step hold
// ≤ 32 slots with even routing) at 32 or 64 columns, in a quarter or half of the tensor work. All experts, same routing:
// 512 / 1,024 / 2,048 tokens 0.985 / 1.625 / 2.963 ms against 1.062 / 1.736 / 3.103 without (H200, harness, 2026-11-29).
// WGG_REMAINDER_TILES=0 turns it off (the harness's baseline). Registers and shared memory: the BN kernel's (the smaller
// tiles use less of both).
#ifndef WGG_REMAINDER_TILES
#define WGG_REMAINDER_TILES 1
#endif
#define WGG_DISPATCH(BN, AHEAD, CTAS, n, call)                                          \
    do {                                                                                \
        if constexpr (WGG_REMAINDER_TILES && CTAS == 1 && BN >= 64) {                   \
            if ((n) <= 32) { call(32, 4, 1); return; }                                  \
        }                                                                               \
        if constexpr (WGG_REMAINDER_TILES && CTAS == 1 && BN >= 128) {                  \
            if ((n) <= 64) { call(64, 4, 1); return; }                                  \
        }                                                                               \
        call(BN, AHEAD, CTAS);                                                          \
    } while (0)

template <int BN, int AHEAD, int CTAS>
__device__ __forceinline__ void dense_body(const signed char* W, const float* scales, const f16_t* x, float* y, int T, int R, int C, int accumulate) {
    const int t0 = blockIdx.x * BN;
#define DENSE_TILE(bn, ahead, ctas) dense_tile<bn, ahead, ctas>(W, scales, x, y, T, R, C, accumulate, t0)
    WGG_DISPATCH(BN, AHEAD, CTAS, T - t0, DENSE_TILE);
#undef DENSE_TILE
}

// Experts gate/up: tiles[3·x] = (expert, first slot, count ≤ BN) (moe_group with BN-slot tiles). The block's 16 tiles
// are 8 gate tiles (rows r0..r0+127) and the 8 matching up tiles, so consumer c's m-tile 0 (gate) and m-tile 1 (up)
// hold the same rows: h[i, r] = fp16(silu(s·gate) · s·up), written in the wgmma input order (down's B). x in that order too.
// grid (max tiles, I / 128).
template <int BN, int AHEAD, int CTAS>
__device__ __forceinline__ void gate_up_tile(const signed char* W, const float* scales, const int* slots, const f16_t* x, f16_t* h,
                                             int I, int H, int K, int e, int first, int n) {
    const int r0 = blockIdx.y * (WGG_ROWS / 2);
    const char* base = reinterpret_cast<const char*>(W) + (size_t)e * 2 * I * H;
    const char* w_tile[WGG_TILES];
#pragma unroll
    for (int t = 0; t < WGG_TILES; t++) {
        const int gate_tile = min(r0 / 16 + (t & 7), I / 16 - 1);
        w_tile[t] = base + (size_t)((t < 8 ? 0 : I / 16) + gate_tile) * (H / 64) * 1024;
    }
    // w_tile order for consume(): consumer c, m-tile m takes tiles 8c + 4m + warp; remap so m = 0 is gate, 1 is up
    const char* ordered[WGG_TILES];
#pragma unroll
    for (int t = 0; t < WGG_TILES; t++) {
        const int cc = t >> 3, m = (t >> 2) & 1, wq = t & 3; // tile t = 8cc + 4m + wq
        ordered[t] = w_tile[(m ? 8 : 0) + 4 * cc + wq];
    }
    const char* xr = reinterpret_cast<const char*>(x + (size_t)(slots[first + min((int)threadIdx.x, n - 1)] / K) * H);
    float acc[2][BN / 2];
    if (!wgmma_block<BN, AHEAD, CTAS>(ordered, xr, H / 64, acc)) return;
    const int c = (threadIdx.x >> 7) - 1;
#pragma unroll
    for (int i = 0; i < BN / 2; i++) {
        const int r = r0 + 64 * c + acc_row(i), slot = acc_token(i);
        if (slot >= n || r >= I) continue;
        const float g = acc[0][i] * scales[(size_t)e * 2 * I + r], u = acc[1][i] * scales[(size_t)e * 2 * I + I + r];
        h[(size_t)(first + slot) * I + wgmma_column(r)] = f32_to_f16(silu_mul(g, u)); // down's input order
    }
}

template <int BN, int AHEAD, int CTAS>
__device__ __forceinline__ void gate_up_body(const signed char* W, const float* scales, const int* tiles, const int* tile_count,
                                             const int* slots, const f16_t* x, f16_t* h, int I, int H, int K) {
    if ((int)blockIdx.x >= *tile_count) return;
    const int e = tiles[3 * blockIdx.x], first = tiles[3 * blockIdx.x + 1], n = tiles[3 * blockIdx.x + 2];
#define GATE_UP_TILE(bn, ahead, ctas) gate_up_tile<bn, ahead, ctas>(W, scales, slots, x, h, I, H, K, e, first, n)
    WGG_DISPATCH(BN, AHEAD, CTAS, n, GATE_UP_TILE);
#undef GATE_UP_TILE
}

// Experts down: out[p · S + z, r] = w[p] · s · Σ_{c in part z} W2_e[r, c] · h[i, c] for the pair p = slots[i] (h from
// the gate/up kernel): the row length I in S = gridDim.z parts, whose partial rows the next norm adds in a fixed order
// (no atomics). S = 2 in decode steps of up to 64 tokens and prompt steps of up to 512, whose few blocks (one an SM, or
// 1.3 waves) leave the GPU idle otherwise (CudaMixtralBackend.DownParts). grid (max tiles, H / 256, S), S dividing I / 64.
template <int BN, int AHEAD, int CTAS>
__device__ __forceinline__ void down_tile(const signed char* W, const float* scales, const int* slots, const float* expert_w, const f16_t* h,
                                          float* out, int H, int I, int e, int first, int n) {
    const int r0 = blockIdx.y * WGG_ROWS, S = gridDim.z, z = blockIdx.z, units = I / 64 / S;
    const char* base = reinterpret_cast<const char*>(W) + (size_t)e * H * I;
    const char* w_tile[WGG_TILES];
#pragma unroll
    for (int t = 0; t < WGG_TILES; t++) w_tile[t] = base + ((size_t)min(r0 / 16 + t, H / 16 - 1) * (I / 64) + (size_t)z * units) * 1024;
    const char* xr = reinterpret_cast<const char*>(h + (size_t)(first + min((int)threadIdx.x, n - 1)) * I + (size_t)z * units * 64);
    float acc[2][BN / 2];
    if (!wgmma_block<BN, AHEAD, CTAS>(w_tile, xr, units, acc)) return;
    const int c = (threadIdx.x >> 7) - 1;
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int i = 0; i < BN / 2; i++) {
            const int r = r0 + 128 * c + 64 * m + acc_row(i), slot = acc_token(i);
            if (slot >= n || r >= H) continue;
            const int p = slots[first + slot];
            out[((size_t)p * S + z) * H + r] = acc[m][i] * expert_w[p] * scales[(size_t)e * H + r];
        }
}

template <int BN, int AHEAD, int CTAS>
__device__ __forceinline__ void down_body(const signed char* W, const float* scales, const int* tiles, const int* tile_count,
                                          const int* slots, const float* expert_w, const f16_t* h, float* out, int H, int I) {
    if ((int)blockIdx.x >= *tile_count) return;
    const int e = tiles[3 * blockIdx.x], first = tiles[3 * blockIdx.x + 1], n = tiles[3 * blockIdx.x + 2];
#define DOWN_TILE(bn, ahead, ctas) down_tile<bn, ahead, ctas>(W, scales, slots, expert_w, h, out, H, I, e, first, n)
    WGG_DISPATCH(BN, AHEAD, CTAS, n, DOWN_TILE);
#undef DOWN_TILE
}

// One set of the three products per token tile BN, loading weights AHEAD units ahead, CTAS blocks an SM (registers: BN
// accumulators and 16 per unit ahead fit the consumers' 232 at one block an SM).
#define WGMMA_KERNELS(BN, AHEAD, CTAS) \
extern "C" __global__ void __launch_bounds__(WGG_THREADS, CTAS) wgmma_dense_i8_n##BN(const signed char* W, const float* scales, const f16_t* x, \
    float* y, int T, int R, int C, int accumulate) \
{ dense_body<BN, AHEAD, CTAS>(W, scales, x, y, T, R, C, accumulate); } \
extern "C" __global__ void __launch_bounds__(WGG_THREADS, CTAS) wgmma_gate_up_i8_n##BN(const signed char* W, const float* scales, const int* tiles, \
    const int* tile_count, const int* slots, const f16_t* x, f16_t* h, int I, int H, int K) \
{ gate_up_body<BN, AHEAD, CTAS>(W, scales, tiles, tile_count, slots, x, h, I, H, K); } \
extern "C" __global__ void __launch_bounds__(WGG_THREADS, CTAS) wgmma_down_i8_n##BN(const signed char* W, const float* scales, const int* tiles, \
    const int* tile_count, const int* slots, const float* expert_w, const f16_t* h, float* out, int H, int I) \
{ down_body<BN, AHEAD, CTAS>(W, scales, tiles, tile_count, slots, expert_w, h, out, H, I); }

// Decode experts at the 8x7B shape (H200, harness prompt_gemm.py --decode-only, 2026-11-29), 64 tokens: n32 at one block
// an SM 498 µs whatever AHEAD (4, 6, 8), at two blocks (AHEAD 1) 451 µs; n64 at two blocks spills wgmma operands (1.4 ms).
// Prompts: weights 3 units ahead (all experts, 512 / 1,024 / 2,048 tokens: 0.960 / 1.587 / 2.862 ms against 0.985 /
// 1.625 / 2.963 with 2; same routing, one harness run, H200, 2026-11-29). The harness tries others with --define.
#ifndef WGG_AHEAD_128
#define WGG_AHEAD_128 3
#endif
WGMMA_KERNELS(128, WGG_AHEAD_128, 1)
WGMMA_KERNELS(64, 4, 1)
WGMMA_KERNELS(32, 1, 2)
