using OrleansMixtral.Engine.Cpu;

namespace OrleansMixtral.Cuda.Tests;

/// <summary>
/// The references KernelTests compares kernels with, checked on the CPU against values worked out by hand, so a GPU
/// failure there points at the kernel and not at its reference.
/// </summary>
public sealed class KernelReferenceTests
{
    [Fact]
    public void The_tiled_layout_puts_pieces_where_mma_cuh_says()
    {
        // 8 pieces (128 bytes) a row: 2 units of 4 pieces. Within a unit: rows 0-7 first (4 pieces each, row-major),
        // then rows 8-15; a row tile's units one after another; then the next 16 rows.
        Assert.Equal(0, KernelReferences.TiledPiece(0, 0, 8));
        Assert.Equal(3, KernelReferences.TiledPiece(0, 3, 8));
        Assert.Equal(4, KernelReferences.TiledPiece(1, 0, 8));
        Assert.Equal(7 * 4 + 2, KernelReferences.TiledPiece(7, 2, 8));
        Assert.Equal(32, KernelReferences.TiledPiece(8, 0, 8));       // the unit's second half
        Assert.Equal(32 + 7 * 4 + 3, KernelReferences.TiledPiece(15, 3, 8));
        Assert.Equal(64, KernelReferences.TiledPiece(0, 4, 8));       // the next unit of the same 16 rows
        Assert.Equal(128, KernelReferences.TiledPiece(16, 0, 8));     // the next row tile
        Assert.Equal(128 + 64 + 32 + 5 * 4 + 1, KernelReferences.TiledPiece(16 + 8 + 5, 5, 8));
    }

    [Fact]
    public void Tiling_moves_whole_16_byte_pieces_and_loses_none()
    {
        const int rows = 32, rowBytes = 192; // 12 pieces a row: 3 units
        var rowMajor = new byte[rows * rowBytes];
        for (var i = 0; i < rowMajor.Length; i++) rowMajor[i] = (byte)(i % 16 == 0 ? i / 16 : i % 16 == 1 ? i / 16 >> 8 : i * 7); // a piece starts with its number
        var tiled = KernelReferences.Tile(rowMajor, rows, rowBytes);
        Assert.Equal(rowMajor.Order(), tiled.Order());
        // piece 5 of row 9 lies at unit 1 (pieces 4-7), second half, row 1 of it, piece 1
        var at = ((0 * 3 + 1) * 2 + 1) * 32 + 1 * 4 + 1;
        Assert.Equal(rowMajor.AsSpan((9 * 12 + 5) * 16, 16).ToArray(), tiled.AsSpan(at * 16, 16).ToArray());
    }

    [Fact]
    public void The_router_keeps_the_k_most_probable_experts_renormalised()
    {
        float[] logits = [1f, 3f, 2f, 0f];
        int[] experts = new int[2];
        float[] weights = new float[2];
        CpuKernels.RouteTopK(logits, experts, weights);
        Assert.Equal([1, 2], experts);
        // e³ / (e³ + e²) = 1 / (1 + e⁻¹)
        Assert.Equal(1 / (1 + Math.Exp(-1)), weights[0], 1e-6);
        Assert.Equal(1 / (1 + Math.E), weights[1], 1e-6);
        Assert.Equal(Math.Exp(3) / (Math.Exp(0) + Math.Exp(1) + Math.Exp(2) + Math.Exp(3)), logits[1], 1e-6); // the logits become the softmax

        float[] tied = [0.5f, 2f, 2f, 2f];
        CpuKernels.RouteTopK(tied, experts, weights);
        Assert.Equal([1, 2], experts); // equal probabilities: the lowest index first, as the kernel's scan
        Assert.Equal([0.5f, 0.5f], weights);
    }

    [Fact]
    public void Paged_attention_weighs_each_cached_position_by_its_softmax_share_in_the_tokens_own_blocks()
    {
        // one kv head of D = 2 for two query heads; block size 2; the sequence's block table is [1, 0]: positions 0 and 1
        // sit in block 1, slots 0 and 1 (cache rows 2 and 3); block 0's rows are never read (poisoned with NaN)
        float nan = float.NaN, ln3 = MathF.Log(3);
        float[] k = [nan, nan, nan, nan, 0, 0, ln3, 0], v = [nan, nan, nan, nan, 1, 0, 0, 1];
        float[] q = [1, 0, 0, 1, /* token 1 */ 1, 0, 0, 1];
        int[] positions = [0, 1], seqOfToken = [0, 0], tables = [1, 0];
        var output = KernelReferences.PagedAttention(q, 4, k, v, positions, seqOfToken, tables, maxBlocks: 2, nHeads: 2, nKv: 1, D: 2, blockSize: 2, scale: 1f);
        // token 0 sees position 0 only: v0. Token 1, head 0: scores (0, ln 3) → shares (1/4, 3/4); head 1: scores (0, 0) → (1/2, 1/2)
        Assert.Equal([1f, 0f, 1f, 0f, 0.25f, 0.75f, 0.5f, 0.5f], output);
    }

    [Fact]
    public void Grouping_by_expert_is_stable_and_cuts_each_experts_run_into_tiles()
    {
        int[] ids = [2, 0, 2, 2, 1, 2, 0, 2]; // pairs 0..7
        var (slots, tiles) = KernelReferences.GroupByExpert(ids, E: 4, tileSlots: 3);
        Assert.Equal([1, 6, 4, 0, 2, 3, 5, 7], slots);
        // expert 0: slots 0-1; expert 1: slot 2; expert 2: slots 3-7 in two tiles (3 + 2); expert 3: none
        Assert.Equal([0, 0, 2, 1, 2, 1, 2, 3, 3, 2, 6, 2], tiles);
    }

    [Fact]
    public void The_skinny_experts_reference_is_swiglu_of_the_chosen_experts_rows_then_the_weighted_down_product()
    {
        // E = 2, I = 1, H = 2, K = 1, two tokens: token 0 → expert 1, token 1 → expert 0
        sbyte[] w13 = [1, 0, 0, 1, /* expert 1 */ 2, 0, 0, 3];
        float[] scales13 = [1, 1, 0.5f, 1], x = [1, 2, 3, 4];
        int[] ids = [1, 0];
        var h = KernelReferences.MoeGateUpInt8(w13, scales13, ids, x, T: 2, I: 1, H: 2, K: 1);
        static float SwiGlu(float g, float u) => KernelReferences.F16(g / (1 + MathF.Exp(-g)) * u);
        Assert.Equal([SwiGlu(0.5f * 2 * 1, 3 * 2), SwiGlu(3, 4)], h); // token 0: gate 0.5·2·x0, up 3·x1; token 1: gate x0, up x1
        sbyte[] w2 = [1, 1, /* expert 1 */ 2, -1];
        float[] scales2 = [1, 1, 1, 0.5f], weights = [0.25f, 0.5f], h16 = [2, 4];
        var output = KernelReferences.MoeDownInt8(w2, scales2, ids, weights, h16, T: 2, H: 2, I: 1, K: 1);
        Assert.Equal([0.25f * 2 * 2, 0.25f * 0.5f * -1 * 2, 0.5f * 4, 0.5f * 4], output);
    }

    [Fact]
    public void The_wgmma_input_order_permutes_each_64_column_unit_in_pairs()
    {
        // pair i = 8q + 2j + b → 8j + q + 4b: pair 0 stays, pair 1 (b = 1) → 4, pair 2 (j = 1) → 8, pair 8 (q = 1) → 1
        Assert.Equal([0, 1, 8, 9, 16, 17, 2, 3], new[] { 0, 1, 2, 3, 4, 5, 16, 17 }.Select(KernelReferences.WgmmaColumn));
        Assert.Equal(64 + 16, KernelReferences.WgmmaColumn(64 + 4)); // the next unit the same, 64 on
        var all = Enumerable.Range(0, 128).Select(KernelReferences.WgmmaColumn).ToArray();
        Assert.Equal(Enumerable.Range(0, 128), all.Order()); // a permutation
    }

    [Fact]
    public void The_residual_norm_adds_each_tokens_pairs_then_norms_and_rounds_to_fp16()
    {
        // H = 2, K = 2: x = (1, 2) + (1, 0) + (0, 1) = (2, 3); mean square 6.5; out = (2, 3) · w / √6.5
        float[] x = [1f, 2f], pairs = [1f, 0f, 0f, 1f], w = [1f, 0.5f], output = new float[2];
        KernelReferences.ResidualRmsNorm(x, null, pairs, 2, writeBack: true, w, output, 1, 2, eps: 0f);
        Assert.Equal([2f, 3f], x);
        Assert.Equal(KernelReferences.F16((float)(2 / Math.Sqrt(6.5))), output[0]);
        Assert.Equal(KernelReferences.F16((float)(1.5 / Math.Sqrt(6.5))), output[1]);
        Assert.NotEqual((float)(2 / Math.Sqrt(6.5)), output[0]); // it is the fp16 value, not the fp32 one
    }
}
