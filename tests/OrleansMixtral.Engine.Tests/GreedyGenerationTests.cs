namespace OrleansMixtral.Engine.Tests;

/// <summary>Greedy continuations through the engine (paged KV cache, one token per step) against transformers.</summary>
public sealed class GreedyGenerationTests
{
    readonly HfReference _hf = HfReference.Load();

    [Fact]
    public async Task Greedy_continuations_of_32_tokens_equal_hf_one_at_a_time()
    {
        await using var engine = TinyModel.Engine();
        foreach (var (prompt, ids, text) in _hf.Greedy)
        {
            var result = await engine.Submit(new GenerationRequest(_hf.Prompts[prompt], new SamplingOptions { Temperature = 0, MaxTokens = 32, IgnoreEos = true }))
                .ReadToEndAsync();
            Assert.Equal(ids, result.OutputTokens);
            Assert.Equal(FinishReason.Length, result.FinishReason);
            Assert.Equal(text, result.Text);
        }
    }

    [Fact]
    public async Task Greedy_continuations_are_the_same_when_all_run_in_one_batch()
    {
        await using var engine = TinyModel.Engine();
        var streams = _hf.Greedy.Select(g => engine.Submit(new GenerationRequest(_hf.Prompts[g.Prompt],
            new SamplingOptions { Temperature = 0, MaxTokens = 32, IgnoreEos = true }))).ToArray();
        var results = await Task.WhenAll(streams.Select(s => s.ReadToEndAsync()));
        for (var i = 0; i < results.Length; i++) Assert.Equal(_hf.Greedy[i].Ids, results[i].OutputTokens);
    }

    [Fact]
    public async Task Streamed_token_texts_concatenate_to_the_result_text()
    {
        await using var engine = TinyModel.Engine();
        var (prompt, _, text) = _hf.Greedy[0];
        var pieces = new List<GeneratedToken>();
        var result = await engine.Submit(new GenerationRequest(_hf.Prompts[prompt], new SamplingOptions { Temperature = 0, MaxTokens = 32, IgnoreEos = true }))
            .ReadToEndAsync(pieces.Add);
        Assert.Equal(text, string.Concat(pieces.Select(p => p.Text)));
        Assert.Equal(result.OutputTokens, pieces.Where(p => p.TokenId >= 0).Select(p => p.TokenId));
        Assert.Equal(Enumerable.Range(0, 32), pieces.Where(p => p.Index >= 0).Select(p => p.Index));
    }
}
