using OrleansMixtral.Tests;

namespace OrleansMixtral.Cuda.Tests;

/// <summary>
/// The loader's reading of kernels/*.cu (the names it looks up at start-up, including those a macro stamps out per
/// tile size) and the wgmma constants the launchers share with the sources; the launchers' signatures are
/// KernelSignatureTests'. Runs on the CPU.
/// </summary>
public sealed class KernelSourceTests
{
    static string Source(string file) => File.ReadAllText(Path.Combine(RepoPaths.Root, "kernels", file));

    [Fact]
    public void Macro_stamped_kernels_are_found_once_per_size_and_plain_ones_once()
    {
        var gemv = CudaDevice.KernelNames(Source("gemv.cu")).ToList();
        var moe = CudaDevice.KernelNames(Source("moe.cu")).ToList();
        int[] sizes = [1, 2, 4, 8];
        Assert.Equal(sizes.SelectMany(n => new[] { $"gemv_i8_nt{n}", $"gemv_bf16_nt{n}" }).Order(), gemv.Order());
        Assert.Equal(sizes.SelectMany(n => new[] { $"moe_gate_up_i8_nt{n}", $"moe_gate_up_bf16_nt{n}", $"moe_down_i8_nt{n}", $"moe_down_bf16_nt{n}" })
            .Append("rmsnorm_router").Append("moe_group").Order(), moe.Order());
        Assert.Equal(new[] { "gemm_i8", "moe_gemm_gate_up_i8", "moe_gemm_down_i8", "gemm_bf16", "moe_gemm_gate_up_bf16", "moe_gemm_down_bf16" }.Order(),
            CudaDevice.KernelNames(Source("gemm.cu")).Order()); // a macro with three parameters
        // the wgmma products once per token tile the backend picks from
        Assert.Equal(Kernels.WgmmaTiles.Select(t => (int)t).SelectMany(n => new[] { $"wgmma_dense_i8_n{n}", $"wgmma_gate_up_i8_n{n}", $"wgmma_down_i8_n{n}" })
            .Append("permute_units_f16").Order(), CudaDevice.KernelNames(Source("wgmma_gemm_sm90a.cu")).Order());
    }

    [Fact]
    public void The_wgmma_kernels_shared_memory_is_what_the_backend_launches_them_with()
    {
        var source = Source("wgmma_gemm_sm90a.cu");
        int Define(string name) => int.Parse(System.Text.RegularExpressions.Regex.Match(source, $@"#define {name} (\d+)\b").Groups[1].Value);
        Assert.Equal(Kernels.WgmmaStages, Define("WGG_STAGES"));
        Assert.Equal((int)Kernels.WgmmaTiles.Max(), Define("WGG_TOKENS"));
        Assert.Equal(Kernels.WgmmaThreads, Define("WGG_THREADS"));
        // WGG_SMEM_FOR(BN): stages of BN token rows (128 bytes each), 2 barriers a stage, row pointers, 1 KB alignment
        Assert.Contains("#define WGG_SMEM_FOR(BN) (WGG_STAGES * (BN) * 128 + 2 * WGG_STAGES * 8 + (BN) * 8 + 1024)", source);
        foreach (var tile in Kernels.WgmmaTiles)
            Assert.Equal(6 * (int)tile * 128 + 2 * 6 * 8 + (int)tile * 8 + 1024, Kernels.WgmmaSharedBytes(tile));
        Assert.Equal(100448, Kernels.WgmmaSharedBytes(WgmmaTile.N128)); // the prompt tile as measured
    }
}
