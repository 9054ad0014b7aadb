using System.Reflection;

namespace OrleansMixtral.Cuda;

/// <summary>A device address as a kernel argument: a type of its own, so a pointer and an integer cannot change places unnoticed.</summary>
public readonly record struct DevicePtr(ulong Address)
{
    public static DevicePtr Null => default;
    public static implicit operator DevicePtr(DeviceBuffer buffer) => new(buffer.Ptr);
}

/// <summary>A launch's blocks (X × Y × Z) and threads per block (every kernel here has one-dimensional blocks).</summary>
public readonly record struct Grid(uint X, uint Y, uint Z, uint Threads)
{
    public Grid(uint x, uint threads) : this(x, 1, 1, threads) { }
    public Grid(uint x, uint y, uint threads) : this(x, y, 1, threads) { }
}

/// <summary>8-token tiles a skinny kernel (gemv.cu, moe.cu) computes per pass: the NT its variants are stamped out for.</summary>
public enum SkinnyTokenTiles { Nt1 = 1, Nt2 = 2, Nt4 = 4, Nt8 = 8 }

/// <summary>Token rows of a wgmma tile: the BN that WGMMA_KERNELS(BN, …) of wgmma_gemm_sm90a.cu stamps out.</summary>
public enum WgmmaTile { N32 = 32, N64 = 64, N128 = 128 }

/// <summary>
/// The kernel a launcher runs: <see cref="Name"/>, or for a stamped-out family (a variant parameter of an enum type
/// after the grid), <see cref="Name"/> followed by the variant's number (gemvI8Nt + 4 = gemvI8Nt4).
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class KernelAttribute(string name) : Attribute
{
    public string Name { get; } = name;
}

/// <summary>A kernel loaded from kernels/*.cu (<see cref="Handle"/> zero where this card's build leaves it out).</summary>
sealed class KernelFunction(string name, IntPtr handle, int variant)
{
    public string Name { get; } = name;
    public IntPtr Handle { get; } = handle;
    /// <summary>The family's variant number (the NT or BN the name ends with); 0 for a single kernel.</summary>
    public int Variant { get; } = variant;
}

/// <summary>
/// One method per kernel of kernels/*.cu, its parameters in the kernel's order with the kernel's names and types
/// (pointers as <see cref="DevicePtr"/>, C int/long/unsigned long long/float as int/long/ulong/float), the grid first
/// and, for a stamped-out family, the variant second. KernelSignatureTests checks every signature against the sources.
/// A launcher only forwards its parameters: arguments are built on the stack (nothing allocates, so decode steps
/// capture into CUDA graphs as before) and the function is found by variant in a table made once at start-up.
/// </summary>
public sealed class Kernels
{
    readonly CudaDevice _d;

    internal Kernels(CudaDevice device)
    {
        _d = device;
        _embedBf16 = One(nameof(EmbedBf16));
        _residualRmsnormF16 = One(nameof(ResidualRmsnormF16));
        _ropeStoreKv = One(nameof(RopeStoreKv));
        _rmsnormRouter = One(nameof(RmsnormRouter));
        _moeGroup = One(nameof(MoeGroup));
        _gemvI8 = Family(nameof(GemvI8));
        _gemvBf16 = Family(nameof(GemvBf16));
        _moeGateUpI8 = Family(nameof(MoeGateUpI8));
        _moeGateUpBf16 = Family(nameof(MoeGateUpBf16));
        _moeDownI8 = Family(nameof(MoeDownI8));
        _moeDownBf16 = Family(nameof(MoeDownBf16));
        _gemmI8 = One(nameof(GemmI8));
        _gemmBf16 = One(nameof(GemmBf16));
        _moeGemmGateUpI8 = One(nameof(MoeGemmGateUpI8));
        _moeGemmGateUpBf16 = One(nameof(MoeGemmGateUpBf16));
        _moeGemmDownI8 = One(nameof(MoeGemmDownI8));
        _moeGemmDownBf16 = One(nameof(MoeGemmDownBf16));
        _permuteUnitsF16 = One(nameof(PermuteUnitsF16));
        _wgmmaDenseI8 = Family(nameof(WgmmaDenseI8));
        _wgmmaGateUpI8 = Family(nameof(WgmmaGateUpI8));
        _wgmmaDownI8 = Family(nameof(WgmmaDownI8));
        _attentionPaged = One(nameof(AttentionPaged));
        _attentionSplit = One(nameof(AttentionSplit));
        _attentionDecodeGqa = One(nameof(AttentionDecodeGqa));
        _attentionPrefill = One(nameof(AttentionPrefill));
        _sampleRows = One(nameof(SampleRows));
        _tileRows16 = One(nameof(TileRows16));
        _dequantI8F16 = One(nameof(DequantI8F16));
        _bf16ToF16 = One(nameof(Bf16ToF16));
        _fillRandomI8 = One(nameof(FillRandomI8));
        _fillRandomBf16 = One(nameof(FillRandomBf16));
        _fillRandomF32 = One(nameof(FillRandomF32));
        HasWgmma = _wgmmaDenseI8.All(f => f.Handle != 0);
        // more than 48 KB of dynamic shared memory must be allowed once, before any launch or graph capture
        if (HasWgmma)
            foreach (var tile in WgmmaTiles)
                foreach (var family in new[] { _wgmmaDenseI8, _wgmmaGateUpI8, _wgmmaDownI8 })
                    device.AllowSharedMemory(Pick(family, (int)tile), WgmmaSharedBytes(tile));
    }

    /// <summary>True on Hopper, where wgmma_gemm_sm90a.cu is built (compute capability 9.0).</summary>
    public bool HasWgmma { get; }

    /// <summary>The wgmma token tiles, ascending.</summary>
    public static readonly WgmmaTile[] WgmmaTiles = [WgmmaTile.N32, WgmmaTile.N64, WgmmaTile.N128];
    public const int WgmmaStages = 6, WgmmaThreads = 384;
    /// <summary>WGG_SMEM_FOR(tile) of kernels/wgmma_gemm_sm90a.cu (6 stages of tile token rows; KernelSourceTests checks the two agree).</summary>
    public static int WgmmaSharedBytes(WgmmaTile tile) => WgmmaStages * (int)tile * 128 + 2 * WgmmaStages * 8 + (int)tile * 8 + 1024;

    // ---- elementwise.cu ----
    [Kernel("embed_bf16")]
    public void EmbedBf16(Grid grid, DevicePtr tokens, DevicePtr table, DevicePtr @out, int H) =>
        Launch(_embedBf16, grid, tokens, table, @out, H);

    [Kernel("residual_rmsnorm_f16")]
    public void ResidualRmsnormF16(Grid grid, DevicePtr x, DevicePtr rows, DevicePtr pairs, int K, int writeBack, DevicePtr w, DevicePtr @out, int H, float eps) =>
        Launch(_residualRmsnormF16, grid, x, rows, pairs, K, writeBack, w, @out, H, eps);

    [Kernel("rope_store_kv")]
    public void RopeStoreKv(Grid grid, DevicePtr qkv, DevicePtr positions, DevicePtr seqOfToken, DevicePtr blockTables, int maxBlocks, DevicePtr kCache,
        DevicePtr vCache, DevicePtr cosT, DevicePtr sinT, int nHeads, int nKv, int D, int blockSize) =>
        Launch(_ropeStoreKv, grid, qkv, positions, seqOfToken, blockTables, maxBlocks, kCache, vCache, cosT, sinT, nHeads, nKv, D, blockSize);

    // ---- moe.cu ----
    [Kernel("rmsnorm_router")]
    public void RmsnormRouter(Grid grid, DevicePtr x, DevicePtr w, DevicePtr @out, DevicePtr gate, DevicePtr expertIds, DevicePtr expertW, int H, float eps, int E, int K) =>
        Launch(_rmsnormRouter, grid, x, w, @out, gate, expertIds, expertW, H, eps, E, K);

    [Kernel("moe_group")]
    public void MoeGroup(Grid grid, DevicePtr expertIds, int P, int E, int tileSlots, DevicePtr slots, DevicePtr tiles, DevicePtr tileCount) =>
        Launch(_moeGroup, grid, expertIds, P, E, tileSlots, slots, tiles, tileCount);

    [Kernel("moe_gate_up_i8_nt")]
    public void MoeGateUpI8(Grid grid, SkinnyTokenTiles nt, DevicePtr W, DevicePtr scales, DevicePtr expertIds, DevicePtr x, DevicePtr h, int T, int I, int H, int K) =>
        Launch(Pick(_moeGateUpI8, (int)nt), grid, W, scales, expertIds, x, h, T, I, H, K);

    [Kernel("moe_gate_up_bf16_nt")]
    public void MoeGateUpBf16(Grid grid, SkinnyTokenTiles nt, DevicePtr W, DevicePtr scales, DevicePtr expertIds, DevicePtr x, DevicePtr h, int T, int I, int H, int K) =>
        Launch(Pick(_moeGateUpBf16, (int)nt), grid, W, scales, expertIds, x, h, T, I, H, K);

    [Kernel("moe_down_i8_nt")]
    public void MoeDownI8(Grid grid, SkinnyTokenTiles nt, DevicePtr W, DevicePtr scales, DevicePtr expertIds, DevicePtr expertW, DevicePtr h, DevicePtr @out,
        int T, int H, int I, int K) =>
        Launch(Pick(_moeDownI8, (int)nt), grid, W, scales, expertIds, expertW, h, @out, T, H, I, K);

    [Kernel("moe_down_bf16_nt")]
    public void MoeDownBf16(Grid grid, SkinnyTokenTiles nt, DevicePtr W, DevicePtr scales, DevicePtr expertIds, DevicePtr expertW, DevicePtr h, DevicePtr @out,
        int T, int H, int I, int K) =>
        Launch(Pick(_moeDownBf16, (int)nt), grid, W, scales, expertIds, expertW, h, @out, T, H, I, K);

    // ---- gemv.cu ----
    [Kernel("gemv_i8_nt")]
    public void GemvI8(Grid grid, SkinnyTokenTiles nt, DevicePtr W, DevicePtr scales, DevicePtr x, DevicePtr y, int T, int R, int C, int accumulate) =>
        Launch(Pick(_gemvI8, (int)nt), grid, W, scales, x, y, T, R, C, accumulate);

    [Kernel("gemv_bf16_nt")]
    public void GemvBf16(Grid grid, SkinnyTokenTiles nt, DevicePtr W, DevicePtr scales, DevicePtr x, DevicePtr y, int T, int R, int C, int accumulate) =>
        Launch(Pick(_gemvBf16, (int)nt), grid, W, scales, x, y, T, R, C, accumulate);

    // ---- gemm.cu ----
    [Kernel("gemm_i8")]
    public void GemmI8(Grid grid, DevicePtr W, DevicePtr scales, DevicePtr x, DevicePtr y, int T, int R, int C, int accumulate) =>
        Launch(_gemmI8, grid, W, scales, x, y, T, R, C, accumulate);

    [Kernel("gemm_bf16")]
    public void GemmBf16(Grid grid, DevicePtr W, DevicePtr scales, DevicePtr x, DevicePtr y, int T, int R, int C, int accumulate) =>
        Launch(_gemmBf16, grid, W, scales, x, y, T, R, C, accumulate);

    [Kernel("moe_gemm_gate_up_i8")]
    public void MoeGemmGateUpI8(Grid grid, DevicePtr W, DevicePtr scales, DevicePtr tiles, DevicePtr tileCount, DevicePtr slots, DevicePtr x, DevicePtr h, int I, int H, int K) =>
        Launch(_moeGemmGateUpI8, grid, W, scales, tiles, tileCount, slots, x, h, I, H, K);

    [Kernel("moe_gemm_gate_up_bf16")]
    public void MoeGemmGateUpBf16(Grid grid, DevicePtr W, DevicePtr scales, DevicePtr tiles, DevicePtr tileCount, DevicePtr slots, DevicePtr x, DevicePtr h, int I, int H, int K) =>
        Launch(_moeGemmGateUpBf16, grid, W, scales, tiles, tileCount, slots, x, h, I, H, K);

    [Kernel("moe_gemm_down_i8")]
    public void MoeGemmDownI8(Grid grid, DevicePtr W, DevicePtr scales, DevicePtr tiles, DevicePtr tileCount, DevicePtr slots, DevicePtr expertW, DevicePtr h, DevicePtr @out,
        int H, int I) =>
        Launch(_moeGemmDownI8, grid, W, scales, tiles, tileCount, slots, expertW, h, @out, H, I);

    [Kernel("moe_gemm_down_bf16")]
    public void MoeGemmDownBf16(Grid grid, DevicePtr W, DevicePtr scales, DevicePtr tiles, DevicePtr tileCount, DevicePtr slots, DevicePtr expertW, DevicePtr h, DevicePtr @out,
        int H, int I) =>
        Launch(_moeGemmDownBf16, grid, W, scales, tiles, tileCount, slots, expertW, h, @out, H, I);

    // ---- wgmma_gemm_sm90a.cu (Hopper only; dynamic shared memory set here from the tile) ----
    [Kernel("permute_units_f16")]
    public void PermuteUnitsF16(Grid grid, DevicePtr x, DevicePtr y, int T, int C) =>
        Launch(_permuteUnitsF16, grid, x, y, T, C);

    [Kernel("wgmma_dense_i8_n")]
    public void WgmmaDenseI8(Grid grid, WgmmaTile tile, DevicePtr W, DevicePtr scales, DevicePtr x, DevicePtr y, int T, int R, int C, int accumulate) =>
        LaunchShared(Pick(_wgmmaDenseI8, (int)tile), grid, WgmmaSharedBytes(tile), W, scales, x, y, T, R, C, accumulate);

    [Kernel("wgmma_gate_up_i8_n")]
    public void WgmmaGateUpI8(Grid grid, WgmmaTile tile, DevicePtr W, DevicePtr scales, DevicePtr tiles, DevicePtr tileCount, DevicePtr slots, DevicePtr x, DevicePtr h,
        int I, int H, int K) =>
        LaunchShared(Pick(_wgmmaGateUpI8, (int)tile), grid, WgmmaSharedBytes(tile), W, scales, tiles, tileCount, slots, x, h, I, H, K);

    [Kernel("wgmma_down_i8_n")]
    public void WgmmaDownI8(Grid grid, WgmmaTile tile, DevicePtr W, DevicePtr scales, DevicePtr tiles, DevicePtr tileCount, DevicePtr slots, DevicePtr expertW,
        DevicePtr h, DevicePtr @out, int H, int I) =>
        LaunchShared(Pick(_wgmmaDownI8, (int)tile), grid, WgmmaSharedBytes(tile), W, scales, tiles, tileCount, slots, expertW, h, @out, H, I);

    // ---- attention.cu ----
    [Kernel("attention_paged")]
    public void AttentionPaged(Grid grid, DevicePtr q, DevicePtr kCache, DevicePtr vCache, DevicePtr positions, DevicePtr seqOfToken, DevicePtr blockTables,
        int maxBlocks, DevicePtr @out, int nHeads, int nKv, int D, int blockSize, float scale, int qStride) =>
        Launch(_attentionPaged, grid, q, kCache, vCache, positions, seqOfToken, blockTables, maxBlocks, @out, nHeads, nKv, D, blockSize, scale, qStride);

    [Kernel("attention_split")]
    public void AttentionSplit(Grid grid, DevicePtr q, DevicePtr kCache, DevicePtr vCache, DevicePtr positions, DevicePtr seqOfToken, DevicePtr blockTables,
        int maxBlocks, DevicePtr @out, int nHeads, int nKv, int D, int blockSize, float scale, int qStride, DevicePtr partO, DevicePtr partMl, DevicePtr arrivals,
        DevicePtr cosT, DevicePtr sinT) =>
        Launch(_attentionSplit, grid, q, kCache, vCache, positions, seqOfToken, blockTables, maxBlocks, @out, nHeads, nKv, D, blockSize, scale, qStride,
            partO, partMl, arrivals, cosT, sinT);

    [Kernel("attention_decode_gqa")]
    public void AttentionDecodeGqa(Grid grid, DevicePtr q, DevicePtr kCache, DevicePtr vCache, DevicePtr positions, DevicePtr seqOfToken, DevicePtr blockTables,
        int maxBlocks, DevicePtr @out, int nHeads, int nKv, int D, int blockSize, float scale, int qStride, DevicePtr partO, DevicePtr partMl, DevicePtr arrivals,
        DevicePtr cosT, DevicePtr sinT) =>
        Launch(_attentionDecodeGqa, grid, q, kCache, vCache, positions, seqOfToken, blockTables, maxBlocks, @out, nHeads, nKv, D, blockSize, scale, qStride,
            partO, partMl, arrivals, cosT, sinT);

    [Kernel("attention_prefill")]
    public void AttentionPrefill(Grid grid, DevicePtr q, DevicePtr kCache, DevicePtr vCache, DevicePtr positions, DevicePtr seqOfToken, DevicePtr blockTables,
        int maxBlocks, DevicePtr @out, int nHeads, int nKv, int D, int blockSize, float scale, int qStride, DevicePtr qTiles, int nTiles) =>
        Launch(_attentionPrefill, grid, q, kCache, vCache, positions, seqOfToken, blockTables, maxBlocks, @out, nHeads, nKv, D, blockSize, scale, qStride,
            qTiles, nTiles);

    // ---- sample.cu ----
    [Kernel("sample_rows")]
    public void SampleRows(Grid grid, DevicePtr logits, int V, DevicePtr temperatures, DevicePtr uniforms, DevicePtr tokens) =>
        Launch(_sampleRows, grid, logits, V, temperatures, uniforms, tokens);

    // ---- quant.cu ----
    [Kernel("tile_rows_16")]
    public void TileRows16(Grid grid, DevicePtr src, DevicePtr dst, long rows, long rowBytes) =>
        Launch(_tileRows16, grid, src, dst, rows, rowBytes);

    [Kernel("dequant_i8_f16")]
    public void DequantI8F16(Grid grid, DevicePtr W, DevicePtr scales, DevicePtr @out, long n, int C) =>
        Launch(_dequantI8F16, grid, W, scales, @out, n, C);

    [Kernel("bf16_to_f16")]
    public void Bf16ToF16(Grid grid, DevicePtr W, DevicePtr @out, long n, int C) =>
        Launch(_bf16ToF16, grid, W, @out, n, C);

    [Kernel("fill_random_i8")]
    public void FillRandomI8(Grid grid, DevicePtr W, long n, ulong seed) =>
        Launch(_fillRandomI8, grid, W, n, seed);

    [Kernel("fill_random_bf16")]
    public void FillRandomBf16(Grid grid, DevicePtr W, long n, ulong seed, float scale) =>
        Launch(_fillRandomBf16, grid, W, n, seed, scale);

    [Kernel("fill_random_f32")]
    public void FillRandomF32(Grid grid, DevicePtr W, long n, ulong seed, float low, float high) =>
        Launch(_fillRandomF32, grid, W, n, seed, low, high);

    readonly KernelFunction _embedBf16, _residualRmsnormF16, _ropeStoreKv, _rmsnormRouter, _moeGroup, _gemmI8, _gemmBf16, _moeGemmGateUpI8, _moeGemmGateUpBf16,
        _moeGemmDownI8, _moeGemmDownBf16, _permuteUnitsF16, _attentionPaged, _attentionSplit, _attentionDecodeGqa, _attentionPrefill, _sampleRows, _tileRows16,
        _dequantI8F16, _bf16ToF16, _fillRandomI8, _fillRandomBf16, _fillRandomF32;
    readonly KernelFunction[] _gemvI8, _gemvBf16, _moeGateUpI8, _moeGateUpBf16, _moeDownI8, _moeDownBf16, _wgmmaDenseI8, _wgmmaGateUpI8, _wgmmaDownI8;

    void Launch(KernelFunction kernel, Grid grid, params ReadOnlySpan<KArg> args) => _d.Launch(kernel, grid, 0, args);

    void LaunchShared(KernelFunction kernel, Grid grid, int sharedBytes, params ReadOnlySpan<KArg> args) => _d.Launch(kernel, grid, (uint)sharedBytes, args);

    /// <summary>The family's kernel for a variant (a scan of at most four: nothing allocates on the launch path).</summary>
    static KernelFunction Pick(KernelFunction[] family, int variant)
    {
        foreach (var kernel in family)
            if (kernel.Variant == variant) return kernel;
        throw new ArgumentOutOfRangeException(nameof(variant), variant, $"{family[0].Name} has no variant {variant}");
    }

    /// <summary>The kernels a launcher runs, read from its <see cref="KernelAttribute"/> (and its variant enum, for a family).</summary>
    static IReadOnlyList<string> KernelNamesOf(MethodInfo launcher)
    {
        var name = launcher.GetCustomAttribute<KernelAttribute>()?.Name ?? throw new ArgumentException($"{launcher.Name} has no [Kernel]");
        var variant = VariantType(launcher);
        return variant is null ? [name] : Enum.GetValues(variant).Cast<object>().Select(v => name + Convert.ToInt32(v)).ToArray();
    }

    /// <summary>The enum of a family's variant parameter (the one after the grid), or null for a single kernel.</summary>
    static Type? VariantType(MethodInfo launcher)
    {
        var parameters = launcher.GetParameters();
        return parameters.Length > 1 && parameters[1].ParameterType.IsEnum ? parameters[1].ParameterType : null;
    }

    KernelFunction One(string launcher) => Resolve(launcher).Single();

    KernelFunction[] Family(string launcher) => Resolve(launcher);

    KernelFunction[] Resolve(string launcher)
    {
        var method = typeof(Kernels).GetMethod(launcher) ?? throw new InvalidOperationException($"no launcher {launcher}");
        var variant = VariantType(method);
        var variants = variant is null ? [0] : Enum.GetValues(variant).Cast<object>().Select(Convert.ToInt32).ToArray();
        return KernelNamesOf(method).Select((name, i) => new KernelFunction(name, _d.FunctionOrZero(name), variants[i])).ToArray();
    }
}
