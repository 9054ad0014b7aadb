using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Engine.Tests;

/// <summary>A conversation's second turn computes only its new tokens; outputs are the same as without reuse.</summary>
public sealed class PrefixReuseTests
{
    static SamplingOptions Greedy(int n) => new() { Temperature = 0, MaxTokens = n, IgnoreEos = true };

    [Fact]
    public async Task Second_turn_computes_only_the_new_tokens_and_matches_a_cold_run()
    {
        var tok = TinyModel.Tokenizer;
        await using var engine = TinyModel.Engine();
        var history = new List<ChatMessage> { new(ChatRole.User, "Tell me about the sea and the old village by the harbour.") };
        var first = tok.EncodeChat(history);
        var turn1 = await engine.Submit(new GenerationRequest(first, Greedy(20))).ReadToEndAsync();
        Assert.Equal(0, turn1.Usage.CachedPromptTokens);

        // the next request carries the whole history: prompt, the reply's tokens, </s>, the new user turn
        var secondPrompt = first.Concat(turn1.OutputTokens).Append(tok.EosId)
            .Concat(tok.Encode("[INST] And then? [/INST]", addBos: false)).ToArray();
        var before = engine.GetStats().PromptTokensComputed;
        var turn2 = await engine.Submit(new GenerationRequest(secondPrompt, Greedy(12))).ReadToEndAsync();
        var computed = engine.GetStats().PromptTokensComputed - before;

        // all but the last sampled token of turn 1 (never fed back) were cached
        var cached = first.Length + turn1.OutputTokens.Count - 1;
        Assert.Equal(cached, turn2.Usage.CachedPromptTokens);
        Assert.Equal(secondPrompt.Length - cached, computed);

        await using var cold = TinyModel.Engine();
        var reference = await cold.Submit(new GenerationRequest(secondPrompt, Greedy(12))).ReadToEndAsync();
        Assert.Equal(0, reference.Usage.CachedPromptTokens);
        Assert.Equal(reference.OutputTokens, turn2.OutputTokens);
    }

    [Fact]
    public async Task Identical_prompt_reuses_all_but_its_last_token()
    {
        await using var engine = TinyModel.Engine();
        var prompt = TinyModel.Tokenizer.Encode(string.Join(' ', Enumerable.Repeat("The quick brown fox jumps over the lazy dog.", 6)));
        var a = await engine.Submit(new GenerationRequest(prompt, Greedy(4))).ReadToEndAsync();
        var b = await engine.Submit(new GenerationRequest(prompt, Greedy(4))).ReadToEndAsync();
        Assert.Equal(prompt.Length - 1, b.Usage.CachedPromptTokens);
        Assert.Equal(a.OutputTokens, b.OutputTokens);
    }

    [Fact]
    public async Task Least_recently_used_prefixes_are_evicted_when_the_cache_is_full()
    {
        // 4 layers × 2 × 64 floats × 4 bytes = 2 KiB per token; 128 KiB = 64 tokens = 4 blocks of 16
        await using var engine = TinyModel.Engine(kvBytes: 128 << 10);
        var tok = TinyModel.Tokenizer;
        var p1 = tok.Encode("One two three four five six seven eight nine ten eleven twelve thirteen fourteen.");
        // no BOS: p2 shares no first token with p1, so reading p2 does not touch p1's blocks
        var p2 = tok.Encode(addBos: false, text: "Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega.");
        await engine.Submit(new GenerationRequest(p1, Greedy(2))).ReadToEndAsync();
        Assert.InRange(p1.Length + 2, 17, 32);              // p1 leaves 2 blocks cached
        Assert.InRange(p2.Length + 2, 33, 48);              // p2 needs 3 of the 4: one of p1's must go
        await engine.Submit(new GenerationRequest(p2, Greedy(2))).ReadToEndAsync();
        var again = await engine.Submit(new GenerationRequest(p1, Greedy(2))).ReadToEndAsync();
        Assert.True(again.Usage.CachedPromptTokens < p1.Length - 1,
            $"p1's prefix should have been evicted for p2: p1 {p1.Length}, p2 {p2.Length}, cached {again.Usage.CachedPromptTokens}, blocks {engine.Info.KvBlocks}");
        Assert.Equal(FinishReason.Length, again.FinishReason);
    }
}
