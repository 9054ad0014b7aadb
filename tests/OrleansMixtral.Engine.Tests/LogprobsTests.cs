namespace OrleansMixtral.Engine.Tests;

/// <summary>
/// Logprobs of generated and prompt tokens (OpenAI's logprobs/top_logprobs, and echo): the log-softmax of the logits the
/// engine sampled from, against Hugging Face's logits of the tiny model (tests/fixtures) and against the CPU backend's
/// logits run outside the engine, with the log-softmax computed here on its own.
/// </summary>
public sealed class LogprobsTests
{
    readonly HfReference _hf = HfReference.Load();

    /// <summary>log-softmax of one row, in double: the reference, written apart from the engine's.</summary>
    static double[] ReferenceLogSoftmax(ReadOnlySpan<float> logits)
    {
        var max = double.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        var sum = 0.0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        var result = new double[logits.Length];
        for (var i = 0; i < logits.Length; i++) result[i] = logits[i] - max - Math.Log(sum);
        return result;
    }

    // The CPU forward pass matches transformers to 1e-4 of the largest logit (HuggingFaceParityTests): a few 1e-3 in logprobs.
    const double HfTolerance = 3e-3;

    static void AssertTop(double[] reference, TokenLogprobs ours, int top, double tolerance, string where)
    {
        Assert.Equal(top, ours.TopTokenIds.Length);
        Assert.Equal(top, ours.TopLogprobs.Length);
        var expected = reference.OrderByDescending(v => v).Take(top).ToArray();
        for (var k = 0; k < top; k++)
        {
            // each alternative's value is its own logprob, the list is best first, and it is the reference's top (ranks
            // within rounding of each other may swap)
            Assert.True(Math.Abs(reference[ours.TopTokenIds[k]] - ours.TopLogprobs[k]) <= tolerance, $"{where} rank {k}: {ours.TopLogprobs[k]} vs {reference[ours.TopTokenIds[k]]}");
            Assert.True(Math.Abs(expected[k] - ours.TopLogprobs[k]) <= tolerance, $"{where} rank {k}: {ours.TopLogprobs[k]}, the reference's {expected[k]}");
            if (k > 0) Assert.True(ours.TopLogprobs[k] <= ours.TopLogprobs[k - 1]);
        }
    }

    [Fact]
    public async Task The_first_generated_token_has_the_log_softmax_of_the_Hugging_Face_logits()
    {
        await using var engine = TinyModel.Engine();
        foreach (var (prompt, logits) in _hf.LastLogits)
        {
            var result = engine.Submit(new GenerationRequest(_hf.Prompts[prompt], SamplingOptions.Greedy(1) with { Logprobs = 20, IgnoreEos = true }));
            var tokens = new List<GeneratedToken>();
            await result.ReadToEndAsync(tokens.Add);
            var first = tokens.Single(t => t.TokenId >= 0).Logprobs!;
            var reference = ReferenceLogSoftmax(logits);
            Assert.True(Math.Abs(reference[first.TokenId] - first.Logprob) <= HfTolerance, $"prompt {prompt}: {first.Logprob} vs {reference[first.TokenId]}");
            AssertTop(reference, first, 20, HfTolerance, $"prompt {prompt}");
            Assert.Equal(first.TokenId, first.TopTokenIds[0]); // greedy took the best
        }
    }

    [Fact]
    public async Task Every_sampled_token_has_the_log_softmax_of_the_raw_logits_whatever_the_temperature()
    {
        await using var engine = TinyModel.Engine();
        var prompt = _hf.Prompts[1];
        var sampling = new SamplingOptions { Temperature = 1.3f, TopK = 40, Seed = 3, MaxTokens = 12, IgnoreEos = true, Logprobs = 5 };
        var tokens = new List<GeneratedToken>();
        var result = await engine.Submit(new GenerationRequest(prompt, sampling)).ReadToEndAsync(tokens.Add);
        var generated = tokens.Where(t => t.TokenId >= 0).ToList();
        Assert.Equal(12, generated.Count);
        Assert.Equal(result.OutputTokens, generated.Select(t => t.TokenId));

        using var backend = TinyModel.Backend();
        var runner = new ModelRunner(backend);
        var pickedBelowTheBest = 0;
        for (var i = 0; i < generated.Count; i++)
        {
            var reference = ReferenceLogSoftmax(runner.LastLogits([.. prompt, .. result.OutputTokens.Take(i)]));
            var lp = generated[i].Logprobs!;
            Assert.Equal(generated[i].TokenId, lp.TokenId);
            Assert.True(Math.Abs(reference[lp.TokenId] - lp.Logprob) <= 1e-4, $"token {i}: {lp.Logprob} vs {reference[lp.TokenId]}");
            AssertTop(reference, lp, 5, 1e-4, $"token {i}");
            if (lp.TokenId != lp.TopTokenIds[0]) pickedBelowTheBest++;
        }
        Assert.True(pickedBelowTheBest > 0, "at temperature 1.3 some token should not be the most likely one");
    }

    [Fact]
    public async Task Prompt_logprobs_match_Hugging_Face_at_every_position_of_every_prompt()
    {
        await using var engine = TinyModel.Engine();
        using var backend = TinyModel.Backend();
        var runner = new ModelRunner(backend);
        var checkedPositions = 0;
        foreach (var (prompt, hfIds, hfLogits) in _hf.Top20)
        {
            var ids = _hf.Prompts[prompt];
            var stream = engine.Submit(new GenerationRequest(ids, SamplingOptions.Greedy(1) with { PromptLogprobs = 20 }));
            await stream.ReadToEndAsync();
            var scores = stream.PromptLogprobs!;
            Assert.Equal(ids.Length, scores.Count);
            Assert.Null(scores[0]); // nothing precedes the first token
            var cpu = new Dictionary<int, double[]>();
            runner.Run(ids, allPositions: true, (pos, logits) => cpu[pos] = ReferenceLogSoftmax(logits));
            for (var pos = 1; pos < ids.Length; pos++)
            {
                var s = scores[pos]!;
                Assert.Equal(ids[pos], s.TokenId);
                // the CPU backend's own logits at the position before, run outside the engine
                Assert.True(Math.Abs(cpu[pos - 1][ids[pos]] - s.Logprob) <= 1e-4, $"prompt {prompt} pos {pos}: {s.Logprob} vs {cpu[pos - 1][ids[pos]]}");
                AssertTop(cpu[pos - 1], s, 20, 1e-4, $"prompt {prompt} pos {pos}");
                // Hugging Face's top 20 there: logprob differences are logit differences, whatever the normalizer
                var hf = hfLogits[pos - 1];
                for (var k = 0; k < 20; k++)
                    Assert.True(Math.Abs((s.TopLogprobs[k] - s.TopLogprobs[0]) - (hf[k] - hf[0])) <= HfTolerance,
                        $"prompt {prompt} pos {pos} rank {k}: {s.TopLogprobs[k] - s.TopLogprobs[0]} vs Hugging Face {hf[k] - hf[0]}");
                var rank = Array.IndexOf(hfIds[pos - 1], ids[pos]);
                if (rank >= 0) Assert.True(Math.Abs((s.Logprob - s.TopLogprobs[0]) - (hf[rank] - hf[0])) <= HfTolerance);
                checkedPositions++;
            }
        }
        Assert.True(checkedPositions > 150, $"only {checkedPositions} positions checked");
    }

    [Fact]
    public async Task A_long_prompt_is_scored_whole_a_few_rows_a_step_beside_other_requests_and_not_from_the_prefix_cache()
    {
        // four sequences a step: four logit rows, so a 300-token prompt is scored over many steps, next to two decodes
        await using var engine = TinyModel.Engine(options: new EngineOptions { MaxRunningSequences = 4 });
        var prompt = TinyModel.Tokenizer.Encode(string.Concat(Enumerable.Repeat("The river rose and the town council met again. ", 30)));
        Assert.InRange(prompt.Length, 250, 400);
        await engine.Submit(new GenerationRequest(prompt, SamplingOptions.Greedy(2))).ReadToEndAsync(); // now in the prefix cache

        var others = Enumerable.Range(0, 2).Select(i => engine.Submit(new GenerationRequest(_hf.Prompts[i], SamplingOptions.Greedy(40) with { IgnoreEos = true }))).ToList();
        var scored = engine.Submit(new GenerationRequest(prompt, SamplingOptions.Greedy(4) with { PromptLogprobs = 2, Logprobs = 2, IgnoreEos = true }));
        var result = await scored.ReadToEndAsync();
        foreach (var o in others) Assert.Equal(FinishReason.Length, (await o.ReadToEndAsync()).FinishReason);

        Assert.Equal(0, result.Usage.CachedPromptTokens);
        var scores = scored.PromptLogprobs!;
        using var backend = TinyModel.Backend();
        var positions = 0;
        new ModelRunner(backend).Run(prompt, allPositions: true, (pos, logits) =>
        {
            if (pos + 1 >= prompt.Length) return;
            var s = scores[pos + 1]!;
            var reference = ReferenceLogSoftmax(logits);
            Assert.True(Math.Abs(reference[prompt[pos + 1]] - s.Logprob) <= 1e-4, $"pos {pos + 1}: {s.Logprob} vs {reference[prompt[pos + 1]]}");
            AssertTop(reference, s, 2, 1e-4, $"pos {pos + 1}");
            positions++;
        });
        Assert.Equal(prompt.Length - 1, positions);
        // the same output as without logprobs: scoring changes how the prompt runs, not what follows
        var plain = await engine.Submit(new GenerationRequest(prompt, SamplingOptions.Greedy(4) with { IgnoreEos = true })).ReadToEndAsync();
        Assert.Equal(plain.OutputTokens, result.OutputTokens);
    }
}
