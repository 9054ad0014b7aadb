using OrleansMixtral.Engine.Cpu;

namespace OrleansMixtral.Engine.Tests;

/// <summary>The CPU forward pass (fp32 weights) against Hugging Face transformers in fp32 on the tiny model.</summary>
public sealed class HuggingFaceParityTests : IDisposable
{
    readonly HfReference _hf = HfReference.Load();
    readonly CpuMixtralBackend _backend = TinyModel.Backend();

    public void Dispose() => _backend.Dispose();

    [Fact]
    public void Last_position_logits_match_to_1e_4_relative()
    {
        var runner = new ModelRunner(_backend);
        foreach (var (prompt, reference) in _hf.LastLogits)
        {
            var ours = runner.LastLogits(_hf.Prompts[prompt]);
            Assert.Equal(reference.Length, ours.Length);
            var scale = reference.Max(MathF.Abs);
            var worst = reference.Zip(ours, (a, b) => MathF.Abs(a - b)).Max();
            Assert.True(worst / scale <= 1e-4, $"prompt {prompt}: max |Δlogit| {worst} vs max |logit| {scale}");
        }
    }

    [Fact]
    public void Top20_logits_match_at_every_position_of_every_prompt()
    {
        var runner = new ModelRunner(_backend);
        var checkedPositions = 0;
        foreach (var (prompt, ids, logits) in _hf.Top20)
        {
            runner.Run(_hf.Prompts[prompt], allPositions: true, (pos, ours) =>
            {
                var scale = logits[pos].Max(MathF.Abs);
                for (var k = 0; k < 20; k++)
                {
                    var diff = MathF.Abs(ours[ids[pos][k]] - logits[pos][k]);
                    Assert.True(diff / scale <= 1e-4, $"prompt {prompt} pos {pos} rank {k}: {ours[ids[pos][k]]} vs {logits[pos][k]}");
                }
                // the reference's best token is ours too, unless the two are within rounding of each other
                var best = Sampling.Sampler.Argmax(ours);
                Assert.True(best == ids[pos][0] || MathF.Abs(ours[best] - ours[ids[pos][0]]) < 1e-4f * scale);
                checkedPositions++;
            });
        }
        Assert.True(checkedPositions > 150, $"only {checkedPositions} positions checked");
    }

    [Fact]
    public void Router_choices_match_for_every_layer_and_position()
    {
        _backend.RouterTrace = new RouterTrace();
        try
        {
            new ModelRunner(_backend).Run(_hf.Prompts[_hf.RouterPrompt], allPositions: false, (_, _) => { });
            var positions = _hf.Prompts[_hf.RouterPrompt].Length;
            var entries = _backend.RouterTrace.Entries;
            Assert.Equal(_hf.RouterExperts.Length * positions, entries.Count);
            for (var l = 0; l < _hf.RouterExperts.Length; l++)
            {
                var layer = entries.Where(e => e.Layer == l).ToArray();
                for (var p = 0; p < positions; p++)
                {
                    Assert.Equal(_hf.RouterExperts[l][p], layer[p].Experts);
                    for (var k = 0; k < 2; k++)
                        Assert.Equal(_hf.RouterWeights[l][p][k], layer[p].Weights[k], 1e-4f);
                }
            }
        }
        finally
        {
            _backend.RouterTrace = null;
        }
    }

    [Fact]
    public void Perplexity_on_held_out_first_16_windows_is_within_0_1_percent_of_hf()
    {
        var stream = TinyModel.Tokenizer.Encode(_hf.HeldOutText, addBos: false);
        var result = new ModelRunner(_backend).Perplexity(stream, TinyModel.Tokenizer.BosId, maxWindows: 16);
        var reference = _hf.Perplexity["heldout_fp32_first16"];
        Assert.Equal(16 * 1023, result.Tokens);
        Assert.True(Math.Abs(result.Perplexity / reference - 1) < 1e-3, $"ours {result.Perplexity} vs HF {reference}");
    }
}
