using OrleansMixtral.Engine;
using OrleansMixtral.Engine.Sampling;

namespace OrleansMixtral.Cuda.Tests;

/// <summary>
/// One kernel at a time through its typed launcher, on small random inputs, against KernelReferences (the CPU
/// backend's math): the layout kernels exactly, the rest within fp16 rounding of the outputs. When a whole-model test
/// fails, these say which kernel. Reported as skipped, not passed, where there is no GPU.
/// </summary>
[Collection("gpu")] // one GPU test class at a time: they share the device
public sealed class KernelTests
{
    static readonly Lazy<CudaDevice?> Gpu = new(() => CudaDevice.IsAvailable(out _) ? CudaDevice.Open() : null);

    static CudaDevice RequireGpu()
    {
        if (Gpu.Value is null)
        {
            CudaDevice.IsAvailable(out var why);
            Assert.Skip("no CUDA device: " + why);
        }
        Gpu.Value!.MakeCurrent();
        return Gpu.Value!;
    }

    /// <summary>Device copies of host arrays, freed together.</summary>
    sealed class Buffers(CudaDevice d) : IDisposable
    {
        readonly List<DeviceBuffer> _all = [];

        public DeviceBuffer Of<T>(T[] host) where T : unmanaged
        {
            var b = New<T>(host.Length);
            d.Upload(b, 0, (ReadOnlySpan<T>)host);
            return b;
        }

        /// <summary>An output buffer poisoned with <paramref name="value"/> (NaN, -1), so that an element the kernel leaves unwritten fails the comparison.</summary>
        public DeviceBuffer Poisoned<T>(int count, T value) where T : unmanaged => Of(Enumerable.Repeat(value, count).ToArray());

        public unsafe DeviceBuffer New<T>(long count) where T : unmanaged
        {
            var b = d.Allocate(count * sizeof(T));
            _all.Add(b);
            return b;
        }

        public T[] Read<T>(DeviceBuffer b, int count) where T : unmanaged
        {
            var host = new T[count];
            d.Download(b, 0, host.AsSpan());
            return host;
        }

        public float[] ReadHalf(DeviceBuffer b, int count) => Read<Half>(b, count).Select(h => (float)h).ToArray();

        public void Dispose() { foreach (var b in _all) b.Dispose(); }
    }

    static float[] Uniform(Random rng, int n, float low = -1f, float high = 1f) =>
        Enumerable.Range(0, n).Select(_ => low + (float)rng.NextDouble() * (high - low)).ToArray();

    static Half[] ToHalf(float[] v) => v.Select(x => (Half)x).ToArray();

    /// <summary>Every element within <paramref name="relative"/> of the reference's largest magnitude (fp16 outputs: 2⁻¹¹ of each value, so 1e-3 of the largest).</summary>
    static void AssertClose(float[] expected, float[] actual, double relative, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var scale = expected.Max(MathF.Abs);
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= relative * scale, $"{what}[{i}]: expected {expected[i]}, got {actual[i]} (tolerance {relative * scale:E2})");
    }

    [Fact]
    public void Tile_rows_16_and_dequant_i8_f16_put_every_piece_where_the_layout_says()
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int rows = 48, cols = 256; // int8: 16 pieces a row, 3 row tiles
        var rng = new Random(1);
        var w = new sbyte[rows * cols];
        for (var i = 0; i < w.Length; i++) w[i] = (sbyte)rng.Next(-127, 128);
        var bytes = (byte[])(Array)w;
        var src = b.Of(bytes);
        var tiled = b.New<byte>(bytes.Length);
        d.Kernels.TileRows16(new(4, 1, 256), src, tiled, rows, cols);
        Assert.Equal(KernelReferences.Tile(bytes, rows, cols), b.Read<byte>(tiled, bytes.Length));

        var scales = Uniform(rng, rows, 0.001f, 0.01f);
        var dense = b.Poisoned(rows * cols, Half.NaN);
        d.Kernels.DequantI8F16(new(4, 1, 256), tiled, b.Of(scales), dense, (long)rows * cols, cols);
        var expected = new float[rows * cols];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++) expected[r * cols + c] = KernelReferences.F16(w[r * cols + c] * scales[r]);
        Assert.Equal(expected, b.ReadHalf(dense, rows * cols));
    }

    [Fact]
    public void Embed_bf16_copies_each_tokens_row()
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int vocab = 50, H = 96;
        var rng = new Random(2);
        // bf16 values exact in fp32: the top half of a float's bits
        var table = Uniform(rng, vocab * H).Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray();
        int[] tokens = [7, 0, 49, 7];
        var output = b.Poisoned(tokens.Length * H, float.NaN);
        d.Kernels.EmbedBf16(new((uint)tokens.Length, 1, 256), b.Of(tokens), b.Of(table), output, H);
        var expected = tokens.SelectMany(t => table.AsSpan(t * H, H).ToArray().Select(u => BitConverter.UInt32BitsToSingle((uint)u << 16))).ToArray();
        Assert.Equal(expected, b.Read<float>(output, tokens.Length * H));
    }

    [Theory]
    [InlineData(false, false)] // the final norm's use: rows picked, no residual
    [InlineData(true, true)]   // a layer's first norm: the previous experts' K pairs added and written back
    [InlineData(true, false)]
    public void Residual_rmsnorm_f16_matches_the_cpu_norm(bool withPairs, bool writeBack)
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int T = 5, H = 512, K = 2;
        const float eps = 1e-5f;
        var rng = new Random(3);
        var x = Uniform(rng, T * H, -2, 2);
        var w = Uniform(rng, H, 0.5f, 1.5f);
        var pairs = withPairs ? Uniform(rng, T * K * H) : null;
        int[]? rows = withPairs ? null : [4, 1, 2];
        var n = rows?.Length ?? T;
        var xDevice = b.Of(x);
        var output = b.Poisoned(n * H, Half.NaN);
        d.Kernels.ResidualRmsnormF16(new((uint)n, 1, 256), xDevice, rows is null ? DevicePtr.Null : b.Of(rows), pairs is null ? DevicePtr.Null : b.Of(pairs),
            K, writeBack ? 1 : 0, b.Of(w), output, H, eps);
        var expected = new float[n * H];
        var xExpected = (float[])x.Clone();
        KernelReferences.ResidualRmsNorm(xExpected, rows, pairs, K, writeBack, w, expected, n, H, eps);
        AssertClose(expected, b.ReadHalf(output, n * H), 1e-3, "out");
        AssertClose(xExpected, b.Read<float>(xDevice, T * H), 1e-6, "x");
        if (withPairs && !writeBack) Assert.Equal(x, b.Read<float>(xDevice, T * H));
    }

    [Fact]
    public void Rmsnorm_router_matches_the_cpu_norm_and_router()
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int T = 16, H = 1024, E = 8, K = 2;
        const float eps = 1e-5f;
        var rng = new Random(4);
        var x = Uniform(rng, T * H, -2, 2);
        var w = Uniform(rng, H, 0.5f, 1.5f);
        var gate = Uniform(rng, E * H, -0.1f, 0.1f);
        var normed = b.Poisoned(T * H, Half.NaN);
        var ids = b.Poisoned(T * K, -1);
        var weights = b.Poisoned(T * K, float.NaN);
        d.Kernels.RmsnormRouter(new(T, 1, 256), b.Of(x), b.Of(w), normed, b.Of(gate), ids, weights, H, eps, E, K);
        var (expectedNormed, expectedIds, expectedWeights, probabilities) = (new float[T * H], new int[T * K], new float[T * K], new float[T * E]);
        KernelReferences.RmsNormRouter(x, w, gate, T, H, E, K, eps, expectedNormed, expectedIds, expectedWeights, probabilities);
        AssertClose(expectedNormed, b.ReadHalf(normed, T * H), 1e-3, "normed");
        var (gotIds, gotWeights) = (b.Read<int>(ids, T * K), b.Read<float>(weights, T * K));
        var compared = 0;
        for (var t = 0; t < T; t++)
        {
            // two of the K + 1 most probable experts this close: rounding may order them either way (rare with random gates)
            var sorted = probabilities.AsSpan(t * E, E).ToArray().OrderDescending().ToArray();
            if (Enumerable.Range(0, K).Any(j => sorted[j] - sorted[j + 1] < 1e-5f)) continue;
            Assert.Equal(expectedIds.AsSpan(t * K, K).ToArray(), gotIds.AsSpan(t * K, K).ToArray());
            for (var k = 0; k < K; k++) Assert.Equal(expectedWeights[t * K + k], gotWeights[t * K + k], 1e-4);
            compared++;
        }
        Assert.True(compared >= T - 2, $"only {compared} of {T} tokens were clear of a near tie");
    }

    [Fact]
    public void Rope_store_kv_rotates_q_in_place_and_stores_k_and_v_in_each_tokens_block()
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int nHeads = 4, nKv = 2, D = 64, blockSize = 16, maxBlocks = 4, blocks = 8;
        int qDim = nHeads * D, kvDim = nKv * D, stride = qDim + 2 * kvDim;
        int[] positions = [0, 17, 40, 5], seqOfToken = [0, 0, 1, 1];
        int[] tables = [3, 6, 0, 0, /* seq 1 */ 1, 2, 7, 0];
        var rng = new Random(5);
        var qkv = Uniform(rng, positions.Length * stride);
        var (cos, sin) = RopeTables.Compute(64, D, 1e6f);
        var qkvDevice = b.Of(qkv);
        var kCache = b.Of(new Half[blocks * blockSize * kvDim]);
        var vCache = b.Of(new Half[blocks * blockSize * kvDim]);
        d.Kernels.RopeStoreKv(new((uint)positions.Length, nHeads + nKv, D / 2), qkvDevice, b.Of(positions), b.Of(seqOfToken), b.Of(tables), maxBlocks, kCache, vCache,
            b.Of(cos), b.Of(sin), nHeads, nKv, D, blockSize);
        var (expectedK, expectedV) = (new float[blocks * blockSize * kvDim], new float[blocks * blockSize * kvDim]);
        var expectedQkv = (float[])qkv.Clone();
        KernelReferences.RopeStoreKv(expectedQkv, positions, seqOfToken, tables, maxBlocks, expectedK, expectedV, cos, sin, nHeads, nKv, D, blockSize);
        var gotQkv = b.Read<float>(qkvDevice, qkv.Length);
        for (var t = 0; t < positions.Length; t++) // q rotated in place (k and v stay as they were in qkv: only the cache gets them)
            AssertClose(expectedQkv.AsSpan(t * stride, qDim).ToArray(), gotQkv.AsSpan(t * stride, qDim).ToArray(), 1e-5, $"q of token {t}");
        AssertClose(expectedK, b.ReadHalf(kCache, expectedK.Length), 1e-3, "k cache");
        Assert.Equal(expectedV, b.ReadHalf(vCache, expectedV.Length)); // v is only rounded to fp16
    }

    [Theory]
    [InlineData(1, SkinnyTokenTiles.Nt1, false)]
    [InlineData(8, SkinnyTokenTiles.Nt1, true)]
    [InlineData(13, SkinnyTokenTiles.Nt2, false)]
    [InlineData(32, SkinnyTokenTiles.Nt4, true)]
    [InlineData(40, SkinnyTokenTiles.Nt8, false)]
    public void Gemv_i8_matches_the_cpu_int8_product_for_each_token_tile_count(int T, SkinnyTokenTiles nt, bool accumulate)
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int R = 48, C = 320; // R a multiple of 16, C of 64
        var rng = new Random(6 + T);
        var w = new sbyte[R * C];
        for (var i = 0; i < w.Length; i++) w[i] = (sbyte)rng.Next(-127, 128);
        var scales = Uniform(rng, R, 0.001f, 0.01f);
        var x16 = Uniform(rng, T * C).Select(KernelReferences.F16).ToArray();
        var y = Uniform(rng, T * R);
        var yDevice = b.Of(y);
        d.Kernels.GemvI8(new(R / 16, 1, 256), nt, b.Of(KernelReferences.Tile((byte[])(Array)w, R, C)), b.Of(scales), b.Of(ToHalf(x16)), yDevice, T, R, C,
            accumulate ? 1 : 0);
        var expected = (float[])y.Clone();
        KernelReferences.GemvInt8(w, scales, x16, expected, T, R, C, accumulate);
        AssertClose(expected, b.Read<float>(yDevice, T * R), 1e-5, "y");
    }

    /// <summary>K distinct experts a token, at random (some experts get none, some many).</summary>
    static int[] Route(Random rng, int T, int E, int K) =>
        Enumerable.Range(0, T).SelectMany(_ => Enumerable.Range(0, E).OrderBy(_ => rng.Next()).Take(K)).ToArray();

    static sbyte[] Int8(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (sbyte)rng.Next(-127, 128)).ToArray();

    /// <summary>A layer's routed experts at random, drawn in this order: routes, weights, W13 and its scales, W2 and its scales, fp16 inputs.</summary>
    static (int[] Ids, float[] ExpertW, sbyte[] W13, float[] Scales13, sbyte[] W2, float[] Scales2, float[] X16) RandomExperts(
        Random rng, int T, int E, int K, int H, int I) =>
        (Route(rng, T, E, K), Uniform(rng, T * K, 0.1f, 0.9f), Int8(rng, E * 2 * I * H), Uniform(rng, E * 2 * I, 0.001f, 0.01f),
         Int8(rng, E * H * I), Uniform(rng, E * H, 0.001f, 0.01f), Uniform(rng, T * H).Select(KernelReferences.F16).ToArray());

    [Theory]
    [InlineData(3, SkinnyTokenTiles.Nt1)]
    [InlineData(16, SkinnyTokenTiles.Nt2)]
    [InlineData(30, SkinnyTokenTiles.Nt4)]
    public void Moe_gate_up_and_down_i8_match_the_cpu_experts_for_each_routed_pair(int T, SkinnyTokenTiles nt)
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int E = 8, K = 2, H = 128, I = 192; // H and I multiples of 64 (the row length) and 16 (the rows)
        var rng = new Random(9 + T);
        var (ids, expertW, w13, scales13, w2, scales2, x16) = RandomExperts(rng, T, E, K, H, I);
        var h16 = Uniform(rng, T * K * I).Select(KernelReferences.F16).ToArray(); // down's input on its own, so each kernel is checked alone
        var (idsDevice, h, output) = (b.Of(ids), b.Poisoned(T * K * I, Half.NaN), b.Poisoned(T * K * H, float.NaN));
        var experts = (uint)Math.Min(E, T * K);
        d.Kernels.MoeGateUpI8(new(I / 16, experts, 256), nt, b.Of(KernelReferences.Tile((byte[])(Array)w13, E * 2 * I, H)), b.Of(scales13), idsDevice,
            b.Of(ToHalf(x16)), h, T, I, H, K);
        d.Kernels.MoeDownI8(new(H / 16, experts, 256), nt, b.Of(KernelReferences.Tile((byte[])(Array)w2, E * H, I)), b.Of(scales2), idsDevice, b.Of(expertW),
            b.Of(ToHalf(h16)), output, T, H, I, K);
        AssertClose(KernelReferences.MoeGateUpInt8(w13, scales13, ids, x16, T, I, H, K), b.ReadHalf(h, T * K * I), 2e-3, "h");
        AssertClose(KernelReferences.MoeDownInt8(w2, scales2, ids, expertW, h16, T, H, I, K), b.Read<float>(output, T * K * H), 1e-5, "out");
    }

    [Fact]
    public void Moe_group_orders_the_pairs_by_expert_and_cuts_tiles()
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int T = 40, E = 8, K = 2, tileSlots = 4;
        var ids = Route(new Random(10), T, E, K);
        var (slots, tiles, count) = (b.Poisoned(T * K, -1), b.Poisoned(3 * (T * K / tileSlots + E), -1), b.Poisoned(1, -1));
        d.Kernels.MoeGroup(new(1, 1, 256), b.Of(ids), T * K, E, tileSlots, slots, tiles, count);
        var (expectedSlots, expectedTiles) = KernelReferences.GroupByExpert(ids, E, tileSlots);
        Assert.Equal(expectedTiles.Length / 3, b.Read<int>(count, 1)[0]);
        Assert.Equal(expectedSlots, b.Read<int>(slots, T * K));
        Assert.Equal(expectedTiles, b.Read<int>(tiles, expectedTiles.Length));
    }

    [Theory]
    [InlineData(40, WgmmaTile.N32, 1)]
    [InlineData(40, WgmmaTile.N32, 2)]
    [InlineData(70, WgmmaTile.N64, 2)]
    [InlineData(150, WgmmaTile.N128, 1)]
    public void Wgmma_experts_grouped_on_the_device_match_the_cpu_experts_for_each_token(int T, WgmmaTile tile, int downParts)
    {
        // the prompt (and large decode) path of CudaMixtralBackend.Experts as one chain: moe_group, permute_units_f16,
        // wgmma_gate_up_i8 (h in down's input order, so checked through down) and wgmma_down_i8 in downParts partial rows
        // a pair; a token's rows (K · downParts, as the next norm adds them) against the skinny experts' references
        var d = RequireGpu();
        if (!d.Kernels.HasWgmma)
            Assert.Skip($"the wgmma kernels are built for compute capability 9.0 only; {d.Name} is {d.ComputeCapability}");
        using var b = new Buffers(d);
        const int E = 8, K = 2, H = 256, I = 384;
        var rng = new Random(12 + T);
        var (ids, expertW, w13, scales13, w2, scales2, x16) = RandomExperts(rng, T, E, K, H, I);
        int slotsPerTile = (int)tile, groups = T * K / slotsPerTile + E; // CudaMixtralBackend.ExpertTiles
        var (slots, tiles, tileCount) = (b.New<int>(T * K), b.New<int>(3 * groups), b.New<int>(1));
        var (permuted, h, output) = (b.Poisoned(T * H, Half.NaN), b.Poisoned(T * K * I, Half.NaN), b.Poisoned(T * K * downParts * H, float.NaN));
        var idsDevice = b.Of(ids);
        d.Kernels.MoeGroup(new(1, 1, 256), idsDevice, T * K, E, slotsPerTile, slots, tiles, tileCount);
        d.Kernels.PermuteUnitsF16(new((uint)T, 1, 256), b.Of(ToHalf(x16)), permuted, T, H);
        d.Kernels.WgmmaGateUpI8(new((uint)groups, (uint)(I / 128), 1, Kernels.WgmmaThreads), tile, b.Of(KernelReferences.Tile((byte[])(Array)w13, E * 2 * I, H)),
            b.Of(scales13), tiles, tileCount, slots, permuted, h, I, H, K);
        d.Kernels.WgmmaDownI8(new((uint)groups, (uint)(H / 256), (uint)downParts, Kernels.WgmmaThreads), tile, b.Of(KernelReferences.Tile((byte[])(Array)w2, E * H, I)),
            b.Of(scales2), tiles, tileCount, slots, b.Of(expertW), h, output, H, I);
        var h16 = KernelReferences.MoeGateUpInt8(w13, scales13, ids, x16, T, I, H, K);
        var pairs = KernelReferences.MoeDownInt8(w2, scales2, ids, expertW, h16, T, H, I, K);
        var rows = b.Read<float>(output, T * K * downParts * H);
        var (expected, actual) = (new float[T * H], new float[T * H]);
        for (var t = 0; t < T; t++)
            for (var c = 0; c < H; c++)
            {
                for (var k = 0; k < K; k++) expected[t * H + c] += pairs[(t * K + k) * H + c];
                for (var r = 0; r < K * downParts; r++) actual[t * H + c] += rows[(t * K * downParts + r) * H + c];
            }
        // h is fp16 on both sides and may differ in its last bit where the products round differently
        AssertClose(expected, actual, 2e-3, $"experts' output, {tile}, {downParts} part(s)");
    }

    public enum AttentionKernel { Paged, Split, DecodeGqa, Prefill }

    [Theory]
    [InlineData(AttentionKernel.Paged)]
    [InlineData(AttentionKernel.Split)]
    [InlineData(AttentionKernel.DecodeGqa)]
    [InlineData(AttentionKernel.Prefill)]
    public void Attention_kernels_match_the_cpu_causal_attention_over_the_paged_cache(AttentionKernel kernel)
    {
        var tolerance = kernel == AttentionKernel.Prefill ? 5e-3 : 2e-3; // prefill: fp16 q and probabilities into the tensor cores
        var d = RequireGpu();
        using var b = new Buffers(d);
        // Mixtral's head shape (D 128, 4 query heads a kv head), two sequences: 64 tokens at positions 40-103 (one
        // prefill query tile) and 21 at 0-20; the decode kernels take each token on its own just the same
        const int nHeads = 8, nKv = 2, D = 128, blockSize = 16, maxBlocks = 8, blocks = 12, splits = 3;
        const int qDim = nHeads * D, kvDim = nKv * D, qStride = qDim + 2 * kvDim;
        var positions = Enumerable.Range(40, 64).Concat(Enumerable.Range(0, 21)).ToArray();
        var seqOfToken = positions.Select((_, t) => t < 64 ? 0 : 1).ToArray();
        int[] tables = [5, 0, 9, 2, 7, 3, 11, 4, /* seq 1 */ 1, 10, 6, 8, 0, 0, 0, 0];
        int[] queryTiles = [0, 64, 64, 21]; // (first token, count): CudaMixtralBackend.QueryTiles' rule
        int T = positions.Length;
        var rng = new Random(8);
        var q = Uniform(rng, T * qStride);
        // cache values as fp16 holds them; whatever the blocks no token reads also random (never looked at)
        var kCache = Uniform(rng, blocks * blockSize * kvDim).Select(KernelReferences.F16).ToArray();
        var vCache = Uniform(rng, blocks * blockSize * kvDim).Select(KernelReferences.F16).ToArray();
        var scale = 1f / MathF.Sqrt(D);
        var output = b.Poisoned(T * qDim, Half.NaN);
        var (qd, kd, vd, pd, sd, td) = (b.Of(q), b.Of(ToHalf(kCache)), b.Of(ToHalf(vCache)), b.Of(positions), b.Of(seqOfToken), b.Of(tables));
        var (partO, partMl, arrivals) = (b.New<float>(T * nHeads * splits * D), b.New<float>(T * nHeads * splits * 2), b.Of(new int[T * nHeads]));
        switch (kernel)
        {
            case AttentionKernel.Paged:
                d.Kernels.AttentionPaged(new(nHeads, (uint)T, 128), qd, kd, vd, pd, sd, td, maxBlocks, output, nHeads, nKv, D, blockSize, scale, qStride);
                break;
            case AttentionKernel.Split:
                d.Kernels.AttentionSplit(new(nHeads, (uint)T, splits, 128), qd, kd, vd, pd, sd, td, maxBlocks, output, nHeads, nKv, D, blockSize, scale, qStride,
                    partO, partMl, arrivals, DevicePtr.Null, DevicePtr.Null); // no cos/sin: the cache holds every row already
                break;
            case AttentionKernel.DecodeGqa:
                d.Kernels.AttentionDecodeGqa(new(nKv, (uint)T, splits, 128), qd, kd, vd, pd, sd, td, maxBlocks, output, nHeads, nKv, D, blockSize, scale, qStride,
                    partO, partMl, arrivals, DevicePtr.Null, DevicePtr.Null);
                break;
            case AttentionKernel.Prefill:
                d.Kernels.AttentionPrefill(new((uint)queryTiles.Length / 2, nHeads, 128), qd, kd, vd, pd, sd, td, maxBlocks, output, nHeads, nKv, D, blockSize, scale,
                    qStride, b.Of(queryTiles), queryTiles.Length / 2);
                break;
        }
        var expected = KernelReferences.PagedAttention(q, qStride, kCache, vCache, positions, seqOfToken, tables, maxBlocks, nHeads, nKv, D, blockSize, scale);
        AssertClose(expected, b.ReadHalf(output, T * qDim), tolerance, kernel.ToString());
        if (kernel is AttentionKernel.Split or AttentionKernel.DecodeGqa) // the merging blocks leave the counters at 0 for the next step
            Assert.All(b.Read<int>(arrivals, T * nHeads), a => Assert.Equal(0, a));
    }

    public enum DenseKernel { Gemm, WgmmaN32, WgmmaN64, WgmmaN128 }

    [Theory]
    [InlineData(DenseKernel.Gemm, false)]
    [InlineData(DenseKernel.Gemm, true)]
    [InlineData(DenseKernel.WgmmaN32, true)]
    [InlineData(DenseKernel.WgmmaN64, false)]
    [InlineData(DenseKernel.WgmmaN128, true)]
    public void Prompt_products_gemm_i8_and_wgmma_dense_i8_match_the_cpu_int8_product(DenseKernel kernel, bool accumulate)
    {
        var d = RequireGpu();
        if (kernel != DenseKernel.Gemm && !d.Kernels.HasWgmma)
            Assert.Skip($"the wgmma kernels are built for compute capability 9.0 only; {d.Name} is {d.ComputeCapability}");
        using var b = new Buffers(d);
        const int T = 70, R = 272, C = 320; // two token blocks and two row blocks, each with a remainder
        var rng = new Random(11);
        var w = Int8(rng, R * C);
        var scales = Uniform(rng, R, 0.001f, 0.01f);
        var x16 = Uniform(rng, T * C).Select(KernelReferences.F16).ToArray();
        var y = Uniform(rng, T * R);
        var (wd, sd, xd, yd) = (b.Of(KernelReferences.Tile((byte[])(Array)w, R, C)), b.Of(scales), b.Of(ToHalf(x16)), b.Of(y));
        static uint Blocks(int n, int per) => (uint)((n + per - 1) / per);
        if (kernel == DenseKernel.Gemm)
            d.Kernels.GemmI8(new(Blocks(R, 256), Blocks(T, 64), 256), wd, sd, xd, yd, T, R, C, accumulate ? 1 : 0);
        else
        {
            var tile = kernel switch { DenseKernel.WgmmaN32 => WgmmaTile.N32, DenseKernel.WgmmaN64 => WgmmaTile.N64, _ => WgmmaTile.N128 };
            var permuted = b.Poisoned(T * C, Half.NaN);
            d.Kernels.PermuteUnitsF16(new(T, 1, 256), xd, permuted, T, C);
            var expectedPermuted = new float[T * C];
            for (var t = 0; t < T; t++)
                for (var c = 0; c < C; c++) expectedPermuted[t * C + KernelReferences.WgmmaColumn(c)] = x16[t * C + c];
            Assert.Equal(expectedPermuted, b.ReadHalf(permuted, T * C));
            d.Kernels.WgmmaDenseI8(new(Blocks(T, (int)tile), Blocks(R, 256), 1, Kernels.WgmmaThreads), tile, wd, sd, permuted, yd, T, R, C, accumulate ? 1 : 0);
        }
        var expected = (float[])y.Clone();
        KernelReferences.GemvInt8(w, scales, x16, expected, T, R, C, accumulate);
        AssertClose(expected, b.Read<float>(yd, T * R), 1e-5, kernel.ToString());
    }

    [Theory]
    [InlineData(AttentionKernel.Split)]
    [InlineData(AttentionKernel.DecodeGqa)]
    public void Decode_attention_with_rope_fused_in_rotates_q_and_k_and_stores_each_tokens_own_row(AttentionKernel kernel)
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        // a decode step: token t the last of sequence t; its own position is not in the cache yet (NaN there: it must
        // come from the qkv row), the positions before it are
        const int nHeads = 8, nKv = 2, D = 128, blockSize = 16, maxBlocks = 8, blocks = 16, splits = 2;
        const int qDim = nHeads * D, kvDim = nKv * D, qStride = qDim + 2 * kvDim;
        int[] positions = [0, 17, 40, 100], seqOfToken = [0, 1, 2, 3];
        int[] tables = [3, 0, 0, 0, 0, 0, 0, 0, /* 1 */ 5, 1, 0, 0, 0, 0, 0, 0, /* 2 */ 2, 4, 6, 0, 0, 0, 0, 0, /* 3 */ 7, 8, 9, 10, 11, 12, 13, 0];
        int T = positions.Length;
        var rng = new Random(12);
        var qkv = Uniform(rng, T * qStride);
        var kCache = Uniform(rng, blocks * blockSize * kvDim).Select(KernelReferences.F16).ToArray();
        var vCache = Uniform(rng, blocks * blockSize * kvDim).Select(KernelReferences.F16).ToArray();
        for (var t = 0; t < T; t++)
        {
            var slot = (tables[t * maxBlocks + positions[t] / blockSize] * blockSize + positions[t] % blockSize) * kvDim;
            Array.Fill(kCache, float.NaN, slot, kvDim);
            Array.Fill(vCache, float.NaN, slot, kvDim);
        }
        var (cos, sin) = RopeTables.Compute(128, D, 1e6f);
        var scale = 1f / MathF.Sqrt(D);
        var output = b.Poisoned(T * qDim, Half.NaN);
        var (kd, vd) = (b.Of(ToHalf(kCache)), b.Of(ToHalf(vCache)));
        var (qd, pd, sd, td, cd, nd) = (b.Of(qkv), b.Of(positions), b.Of(seqOfToken), b.Of(tables), b.Of(cos), b.Of(sin));
        var (partO, partMl, arrivals) = (b.New<float>(T * nHeads * splits * D), b.New<float>(T * nHeads * splits * 2), b.Of(new int[T * nHeads]));
        if (kernel == AttentionKernel.Split)
            d.Kernels.AttentionSplit(new(nHeads, (uint)T, splits, 128), qd, kd, vd, pd, sd, td, maxBlocks, output, nHeads, nKv, D, blockSize, scale, qStride,
                partO, partMl, arrivals, cd, nd);
        else
            d.Kernels.AttentionDecodeGqa(new(nKv, (uint)T, splits, 128), qd, kd, vd, pd, sd, td, maxBlocks, output, nHeads, nKv, D, blockSize, scale, qStride,
                partO, partMl, arrivals, cd, nd);
        // the reference: rope_store_kv's (q and k rotated, the token's k/v into the cache), then attention over the cache
        var rotated = (float[])qkv.Clone();
        KernelReferences.RopeStoreKv(rotated, positions, seqOfToken, tables, maxBlocks, kCache, vCache, cos, sin, nHeads, nKv, D, blockSize);
        var expected = KernelReferences.PagedAttention(rotated, qStride, kCache, vCache, positions, seqOfToken, tables, maxBlocks, nHeads, nKv, D, blockSize, scale);
        AssertClose(expected, b.ReadHalf(output, T * qDim), 2e-3, kernel + " with rope");
        AssertClose(kCache, b.ReadHalf(kd, kCache.Length), 1e-3, "k cache");
        Assert.Equal(vCache, b.ReadHalf(vd, vCache.Length));
        Assert.All(b.Read<int>(arrivals, T * nHeads), a => Assert.Equal(0, a));
    }

    [Fact]
    public void Sample_rows_picks_the_host_samplers_token_for_the_same_draw()
    {
        var d = RequireGpu();
        using var b = new Buffers(d);
        const int V = 3000;
        float[] temperatures = [0f, 0.5f, 1f, 1.7f, 1f, 1f];
        double[] uniforms = [0.3, 0.01, 0.5, 0.99, 0.0, 0.75];
        var rng = new Random(7);
        var logits = Uniform(rng, temperatures.Length * V, -4, 4);
        logits[V + 123] = 9f; // row 1: one clear favourite at a low temperature
        var tokens = b.Poisoned(temperatures.Length, -1);
        d.Kernels.SampleRows(new((uint)temperatures.Length, 1, 1024), b.Of(logits), V, b.Of(temperatures), b.Of(uniforms), tokens);
        var sampler = new Sampler(V);
        var expected = Enumerable.Range(0, temperatures.Length).Select(r => sampler.SampleWithDraw(logits.AsSpan(r * V, V), temperatures[r], uniforms[r])).ToArray();
        Assert.Equal(expected, b.Read<int>(tokens, temperatures.Length));
    }
}
