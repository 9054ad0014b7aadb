using System.Diagnostics;
using System.Text;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Tokenization.Tests;

/// <summary>Timings run alone, after the parallel tests, so that other tests do not skew them.</summary>
[CollectionDefinition(nameof(SpeedTests), DisableParallelization = true)]
public sealed class SpeedTestsCollection;

[Collection(nameof(SpeedTests))]
public sealed class SpeedTests(ITestOutputHelper output)
{
    [Fact]
    public void Load_TakesUnder300Milliseconds()
    {
        var times = new List<long>();
        for (int i = 0; i < 3; i++)
        {
            var clock = Stopwatch.StartNew();
            MistralTokenizer.Load(RepoPaths.TinyModel);
            times.Add(clock.ElapsedMilliseconds);
        }
        output.WriteLine($"Load: {string.Join(", ", times)} ms");
        Assert.True(times.Min() < 300, $"Load took {string.Join(", ", times)} ms");
    }

    [Fact]
    public void TwoMegabytesOfText_EncodeInAFewSeconds()
    {
        MistralTokenizer tokenizer = TestTokenizer.Instance;
        string text = File.ReadAllText(JsReference.HeldoutText);
        var builder = new StringBuilder(text);
        while (builder.Length < 2_000_000) builder.Append('\n').Append(text);
        text = builder.ToString();

        var clock = Stopwatch.StartNew();
        int[] ids = tokenizer.Encode(text);
        clock.Stop();
        output.WriteLine($"{text.Length:N0} chars → {ids.Length:N0} tokens in {clock.ElapsedMilliseconds} ms");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.ElapsedMilliseconds} ms");
        Assert.Equal(text, tokenizer.Decode(ids));
    }
}
