using OrleansMixtral.Engine;

namespace OrleansMixtral.Cuda.Tests;

/// <summary>
/// attention_prefill takes a step's tokens as query tiles: runs of one sequence's consecutive positions, at most 64
/// tokens each (kernels/attention.cu). The host builds them; a wrong tile attends with wrong positions. Runs on the CPU.
/// </summary>
public sealed class QueryTileTests
{
    [Fact]
    public void Decode_tokens_are_tiles_of_one_and_a_prompt_chunk_is_cut_every_64_tokens()
    {
        var batch = new ForwardBatch(512, 4, 8);
        int a = batch.AddSequence([0]), b = batch.AddSequence([1]), c = batch.AddSequence([2]);
        batch.AddToken(a, 7, 40, wantLogits: true);                                   // decode: token 0
        batch.AddToken(b, 7, 12, wantLogits: true);                                   // decode: token 1
        for (var i = 0; i < 150; i++) batch.AddToken(c, 7, 100 + i, wantLogits: i == 149); // chunk at 100..249: tokens 2..151
        var tiles = new int[2 * batch.TokenCount];
        var n = CudaMixtralBackend.QueryTiles(batch, tiles);
        // hand-computed: [0,1] [1,1] then 150 tokens from token 2 as 64 + 64 + 22
        Assert.Equal([0, 1, 1, 1, 2, 64, 66, 64, 130, 22], tiles[..(2 * n)]);
    }

    [Fact]
    public void A_break_in_positions_of_one_sequence_starts_a_new_tile()
    {
        var batch = new ForwardBatch(16, 1, 4);
        var s = batch.AddSequence([0]);
        foreach (var p in new[] { 0, 1, 2, 5, 6 }) batch.AddToken(s, 1, p, wantLogits: false);
        var tiles = new int[2 * batch.TokenCount];
        var n = CudaMixtralBackend.QueryTiles(batch, tiles);
        Assert.Equal([0, 3, 3, 2], tiles[..(2 * n)]);
    }
}
