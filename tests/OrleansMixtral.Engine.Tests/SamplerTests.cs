using OrleansMixtral.Engine.Sampling;

namespace OrleansMixtral.Engine.Tests;

public sealed class SamplerTests
{
    [Fact]
    public void Temperature_sampling_follows_the_softmax_distribution()
    {
        // logits ln(1), ln(2), ln(3), ln(4): probabilities 0.1, 0.2, 0.3, 0.4 at temperature 1
        float[] logits = [0f, MathF.Log(2), MathF.Log(3), MathF.Log(4)];
        var sampler = new Sampler(4);
        var rng = new SplitMix64(42);
        var counts = new int[4];
        const int n = 40000;
        for (var i = 0; i < n; i++) counts[sampler.Sample(logits, new SamplingOptions { Temperature = 1 }, ref rng)]++;
        for (var k = 0; k < 4; k++) Assert.InRange(counts[k] / (double)n, 0.1 * (k + 1) - 0.01, 0.1 * (k + 1) + 0.01);
    }

    [Fact]
    public void Top_k_and_top_p_keep_only_the_head_of_the_distribution()
    {
        float[] logits = [0f, MathF.Log(2), MathF.Log(3), MathF.Log(4)];
        var sampler = new Sampler(4);
        var rng = new SplitMix64(1);
        var seen = new HashSet<int>();
        for (var i = 0; i < 2000; i++) seen.Add(sampler.Sample(logits, new SamplingOptions { Temperature = 1, TopK = 2 }, ref rng));
        Assert.Equal([2, 3], seen.Order());
        seen.Clear();
        // top_p 0.5: 0.4 alone is below 0.5, 0.4 + 0.3 reaches it → {3, 2}
        for (var i = 0; i < 2000; i++) seen.Add(sampler.Sample(logits, new SamplingOptions { Temperature = 1, TopP = 0.5f }, ref rng));
        Assert.Equal([2, 3], seen.Order());
    }

    [Fact]
    public void Greedy_takes_the_first_of_equal_maxima()
    {
        Assert.Equal(1, Sampler.Argmax([0f, 5f, 5f, -1f]));
    }
}

public sealed class StopStringMatcherTests
{
    [Fact]
    public void Holds_back_a_possible_stop_prefix_and_cuts_at_the_stop()
    {
        var m = new StopStringMatcher(["</end>"]);
        Assert.Equal("Hello ", m.Append("Hello "));
        Assert.Equal("", m.Append("</e"));      // could be the stop string
        Assert.Equal("", m.Append("nd> more"));  // it was
        Assert.True(m.Stopped);
        Assert.Equal("Hello ", m.Text);
    }

    [Fact]
    public void Releases_held_text_when_it_turns_out_not_to_be_a_stop()
    {
        var m = new StopStringMatcher(["STOP"]);
        Assert.Equal("a", m.Append("aST"));
        Assert.Equal("STx", m.Append("x"));
        Assert.Equal("", m.Append("ST"));
        Assert.Equal("ST", m.Flush());
        Assert.False(m.Stopped);
        Assert.Equal("aSTxST", m.Text);
    }
}

/// <summary>The one sampling-options type: its defaults (OpenAI-compatible servers') and its one validation.</summary>
public sealed class SamplingOptionsTests
{
    [Fact]
    public void Defaults_are_those_of_OpenAI_compatible_servers()
    {
        var o = new SamplingOptions();
        Assert.Equal(1f, o.Temperature);
        Assert.Equal(1f, o.TopP);
        Assert.Equal(0, o.TopK);
        Assert.Null(o.MaxTokens); // what the context leaves
        Assert.Null(o.Seed);
        Assert.False(o.IsGreedy);
        Assert.Null(o.Check());
        // no limit: the context's room after the prompt; a limit: the smaller of the two
        Assert.Equal(1024 - 100, o.MaxTokensFor(100, 1024));
        Assert.Equal(16, (o with { MaxTokens = 16 }).MaxTokensFor(100, 1024));
        Assert.Equal(4, (o with { MaxTokens = 16 }).MaxTokensFor(1020, 1024));
    }

    [Theory]
    [InlineData(-0.1f, 1f, 0, null, "temperature")]
    [InlineData(2.01f, 1f, 0, null, "temperature")]
    [InlineData(float.NaN, 1f, 0, null, "temperature")]
    [InlineData(1f, -0.1f, 0, null, "top_p")]
    [InlineData(1f, 1.01f, 0, null, "top_p")]
    [InlineData(1f, 1f, -1, null, "top_k")]
    [InlineData(1f, 1f, 0, 0, "max_tokens")]
    public void Out_of_range_options_name_their_field(float temperature, float topP, int topK, int? maxTokens, string param)
    {
        var problem = new SamplingOptions { Temperature = temperature, TopP = topP, TopK = topK, MaxTokens = maxTokens }.Check();
        Assert.NotNull(problem);
        Assert.Equal(param, problem.Param);
    }

    [Fact]
    public void The_edges_of_the_ranges_are_allowed_and_top_p_0_is_greedy()
    {
        Assert.Null(new SamplingOptions { Temperature = 2, TopP = 0, MaxTokens = 1 }.Check());
        Assert.Null(new SamplingOptions { Temperature = 0, TopP = 1, Logprobs = 20, PromptLogprobs = 0 }.Check());
        Assert.Equal("top_logprobs", new SamplingOptions { Logprobs = 21 }.Check()!.Param);
        Assert.Equal("stop", new SamplingOptions { StopStrings = [""] }.Check()!.Param);
        var nucleus0 = new SamplingOptions { Temperature = 0.7f, TopP = 0 };
        Assert.True(nucleus0.IsGreedy);
        Assert.Equal(new SamplingOptions { Temperature = 0, TopP = 1 }, nucleus0.Normalized());
        float[] logits = [0.1f, 2f, 0.5f, 1.9f];
        var rng = new SplitMix64(7);
        for (var i = 0; i < 100; i++) Assert.Equal(1, new Sampler(4).Sample(logits, nucleus0, ref rng));
    }
}
