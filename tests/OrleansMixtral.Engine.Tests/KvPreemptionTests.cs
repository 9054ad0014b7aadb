namespace OrleansMixtral.Engine.Tests;

/// <summary>
/// KV blocks are taken as sequences grow, not reserved for prompt + max_tokens at admission: more sequences run at once,
/// and when the cache runs out the newest sequence is preempted and resumes from its cached prefix without losing or
/// repeating a token of its stream.
/// </summary>
public sealed class KvPreemptionTests
{
    static SamplingOptions Greedy(int n) => new() { Temperature = 0, MaxTokens = n, IgnoreEos = true };

    // 2 KiB a token on the CPU tiny model (4 layers × K and V × 64 floats): 256 KiB = 128 tokens = 8 blocks of 16
    const long EightBlocks = 256 << 10;

    static int[][] Prompts() =>
    [
        TinyModel.Tokenizer.Encode("The history of the city"),
        TinyModel.Tokenizer.Encode("Once upon a time there"),
        TinyModel.Tokenizer.Encode("The weather today is"),
        TinyModel.Tokenizer.Encode("In the beginning of the"),
    ];

    [Fact]
    public async Task Four_sequences_that_outgrow_the_cache_run_together_and_each_gets_its_tokens_alone()
    {
        var prompts = Prompts();
        Assert.All(prompts, p => Assert.InRange(p.Length, 2, 15)); // one block each at admission
        const int Output = 40; // 45-55 tokens = 3-4 blocks each: 13-16 blocks for the four, the cache holds 8

        await using var roomy = TinyModel.Engine();
        var alone = new List<GenerationResult>();
        foreach (var p in prompts) alone.Add(await roomy.Submit(new GenerationRequest(p, Greedy(Output))).ReadToEndAsync());

        await using var engine = TinyModel.Engine(kvBytes: EightBlocks);
        Assert.Equal(8, engine.Info.KvBlocks);
        var streams = prompts.Select(p => engine.Submit(new GenerationRequest(p, Greedy(Output)))).ToArray();
        var indices = streams.Select(_ => new List<int>()).ToArray();
        var (together, mostRunning) = await TinyModel.WatchRunning(engine,
            () => Task.WhenAll(streams.Select((s, i) => s.ReadToEndAsync(t => { if (t.Index >= 0) indices[i].Add(t.Index); }))));

        var stats = engine.GetStats();
        // reserving prompt + max_tokens would have run two at a time (4 blocks each) and never preempted
        Assert.True(mostRunning >= 3, $"at most {mostRunning} sequences ran at once");
        Assert.True(stats.Preemptions > 0, "the four outgrow 8 blocks: someone must have been preempted");
        Assert.Equal(0, stats.KvBlocksUsed);
        for (var i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(FinishReason.Length, together[i].FinishReason);
            Assert.Equal(alone[i].OutputTokens, together[i].OutputTokens);
            Assert.Equal(alone[i].Text, together[i].Text);
            Assert.Equal(Enumerable.Range(0, Output), indices[i]); // streamed once each, in order, across preemptions
            Assert.Equal(0, together[i].Usage.CachedPromptTokens); // usage counts the prompt's first admission only
        }
    }

    [Fact]
    public async Task A_sequence_that_fits_the_cache_alone_is_never_refused_while_others_hold_it()
    {
        var prompts = Prompts();
        await using var engine = TinyModel.Engine(kvBytes: EightBlocks);
        // 100 tokens (7 blocks) fits the cache by itself; the others come first and hold blocks
        var small = prompts.Take(3).Select(p => engine.Submit(new GenerationRequest(p, Greedy(30)))).ToArray();
        var big = engine.Submit(new GenerationRequest(prompts[3], Greedy(100 - prompts[3].Length)));
        var results = await Task.WhenAll(small.Append(big).Select(s => s.ReadToEndAsync()));
        Assert.All(results, r => Assert.Equal(FinishReason.Length, r.FinishReason));
        Assert.Equal(100 - prompts[3].Length, results[^1].OutputTokens.Count);
    }
}
