using OrleansMixtral.Engine.Cpu;

namespace OrleansMixtral.Engine.Tests;

/// <summary>int8 weight-only (per output channel) against fp32 weights and against HF's fake-quantized model.</summary>
public sealed class Int8WeightTests
{
    readonly HfReference _hf = HfReference.Load();

    [Fact]
    public void Int8_held_out_perplexity_is_within_0_1_percent_of_fp32_and_matches_hf_fake_quant()
    {
        var stream = TinyModel.Tokenizer.Encode(_hf.HeldOutText, addBos: false);
        using var fp32 = TinyModel.Backend();
        using var int8 = TinyModel.Backend(CpuWeightFormat.Int8);
        var full = new ModelRunner(fp32).Perplexity(stream, 1, maxWindows: 16).Perplexity;
        var quant = new ModelRunner(int8).Perplexity(stream, 1, maxWindows: 16).Perplexity;
        Assert.True(quant / full - 1 < 1e-3, $"int8 {quant} vs fp32 {full}");
        var hfQuant = _hf.Perplexity["heldout_int8_weight_only_first16"];
        Assert.True(Math.Abs(quant / hfQuant - 1) < 1e-3, $"int8 {quant} vs HF fake-quant {hfQuant}");
    }

    [Fact]
    public void Int8_weights_take_a_quarter_of_the_fp32_linear_weights()
    {
        using var fp32 = TinyModel.Backend();
        using var int8 = TinyModel.Backend(CpuWeightFormat.Int8);
        // the embedding table (16.4 MB fp32, shared with the tied lm_head) stays fp32 in both
        var embedding = 32000L * 128 * 4;
        var ratio = (double)(int8.WeightBytes - embedding) / (fp32.WeightBytes - embedding);
        Assert.InRange(ratio, 0.25, 0.27);
    }
}
