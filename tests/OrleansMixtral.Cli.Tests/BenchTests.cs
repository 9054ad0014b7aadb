using System.Globalization;
using System.Text.Json;

namespace OrleansMixtral.Cli.Tests;

public sealed class BenchTests : IDisposable
{
    readonly string _file = Path.Combine(Path.GetTempPath(), "mixtral-bench-" + Guid.NewGuid().ToString("N") + ".json");

    readonly string _png = Path.Combine(Path.GetTempPath(), "mixtral-bench-" + Guid.NewGuid().ToString("N") + ".png");

    public void Dispose()
    {
        File.Delete(_file);
        File.Delete(_png);
    }

    [Fact]
    public void Plot_writes_a_png_of_the_levels()
    {
        var r = Cli.Run("bench", "--model", Cli.Model, "--prompt-tokens", "8", "--output-tokens", "4", "--concurrency", "1,2", "--plot", _png);
        Assert.True(r.ExitCode == 0, r.ToString());
        var bytes = File.ReadAllBytes(_png);
        Assert.True(bytes.Length > 10_000, $"{bytes.Length} bytes");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
    }

    [Fact]
    public void Several_prompt_lengths_run_every_level_at_each_into_the_json_and_a_ttft_plot()
    {
        var r = Cli.Run("bench", "--model", Cli.Model, "--prompt-tokens", "16,64", "--output-tokens", "4", "--concurrency", "1,2",
            "--prefill-chunk", "32", "--json", _file, "--plot", _png);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("16,64 prompt + 4 output tokens", r.Out);

        using var doc = JsonDocument.Parse(File.ReadAllText(_file));
        JsonElement settings = doc.RootElement.GetProperty("settings");
        Assert.False(settings.TryGetProperty("promptTokens", out _)); // no single length to name
        Assert.Equal([16, 64], settings.GetProperty("promptLengths").EnumerateArray().Select(x => x.GetInt32()));
        Assert.Equal(32, settings.GetProperty("prefillChunkTokens").GetInt32());
        JsonElement[] levels = doc.RootElement.GetProperty("levels").EnumerateArray().ToArray();
        Assert.Equal([(16, 1), (16, 2), (64, 1), (64, 2)],
            levels.Select(l => (l.GetProperty("promptTokens").GetInt32(), l.GetProperty("concurrency").GetInt32())));
        foreach (JsonElement level in levels)
        {
            JsonElement[] requests = level.GetProperty("requests").EnumerateArray().ToArray();
            Assert.Equal(level.GetProperty("concurrency").GetInt32(), requests.Length);
            Assert.All(requests, q => Assert.Equal(level.GetProperty("promptTokens").GetInt32(), q.GetProperty("promptTokens").GetInt32()));
            Assert.All(requests, q => Assert.Equal(4, q.GetProperty("outputTokens").GetInt32()));
            Assert.True(level.GetProperty("ttftP50Ms").GetDouble() > 0);
        }

        var bytes = File.ReadAllBytes(_png);
        Assert.True(bytes.Length > 10_000, $"{bytes.Length} bytes");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
    }

    [Fact]
    public void Two_levels_to_a_table_and_a_json_file()
    {
        var r = Cli.Run("bench", "--model", Cli.Model, "--prompt-tokens", "16", "--output-tokens", "8", "--concurrency", "1,2", "--json", _file);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("TTFT p50", r.Out);
        Assert.Contains("aggregate", r.Out);

        using var doc = JsonDocument.Parse(File.ReadAllText(_file));
        JsonElement j = doc.RootElement;
        Assert.Equal(Environment.ProcessorCount, j.GetProperty("machine").GetProperty("cores").GetInt32());
        Assert.False(string.IsNullOrEmpty(j.GetProperty("machine").GetProperty("os").GetString()));
        Assert.Equal("cpu-fp32", j.GetProperty("backend").GetString());
        Assert.Equal("tiny-mixtral", j.GetProperty("model").GetProperty("name").GetString());
        DateTimeOffset date = DateTimeOffset.Parse(j.GetProperty("date").GetString()!, CultureInfo.InvariantCulture);
        Assert.True(Math.Abs((DateTimeOffset.UtcNow - date).TotalMinutes) < 10);

        // one prompt length: the shape as before (settings.promptTokens a number), plus the lengths and the chunk
        JsonElement settings = j.GetProperty("settings");
        Assert.Equal(16, settings.GetProperty("promptTokens").GetInt32());
        Assert.Equal([16], settings.GetProperty("promptLengths").EnumerateArray().Select(x => x.GetInt32()));
        Assert.Equal(512, settings.GetProperty("prefillChunkTokens").GetInt32());

        JsonElement[] levels = j.GetProperty("levels").EnumerateArray().ToArray();
        Assert.Equal([1, 2], levels.Select(l => l.GetProperty("concurrency").GetInt32()));
        Assert.All(levels, l => Assert.Equal(16, l.GetProperty("promptTokens").GetInt32()));
        foreach (JsonElement level in levels)
        {
            int concurrency = level.GetProperty("concurrency").GetInt32();
            JsonElement[] requests = level.GetProperty("requests").EnumerateArray().ToArray();
            Assert.Equal(concurrency, requests.Length);
            Assert.Equal(8 * concurrency, level.GetProperty("outputTokens").GetInt32());
            double wall = level.GetProperty("wallSeconds").GetDouble();
            Assert.Equal(8 * concurrency / wall, level.GetProperty("aggregateOutputTokensPerSecond").GetDouble(), 0.01 * 8 * concurrency / wall);
            foreach (JsonElement q in requests)
            {
                Assert.Equal(16, q.GetProperty("promptTokens").GetInt32());
                Assert.Equal(8, q.GetProperty("outputTokens").GetInt32());
                Assert.True(q.GetProperty("cachedPromptTokens").GetInt32() <= 1); // distinct prompts: at most the shared BOS
                double ttft = q.GetProperty("ttftMs").GetDouble(), e2e = q.GetProperty("endToEndMs").GetDouble();
                Assert.InRange(ttft, 0.001, e2e);
                Assert.Equal(7 / ((e2e - ttft) / 1e3), q.GetProperty("perceivedTokensPerSecond").GetDouble(), 0.01 * 7 / ((e2e - ttft) / 1e3));
                Assert.Equal(24 / (e2e / 1e3), q.GetProperty("totalTokensPerSecond").GetDouble(), 0.01 * 24 / (e2e / 1e3));
            }
            double[] ttfts = requests.Select(q => q.GetProperty("ttftMs").GetDouble()).Order().ToArray();
            Assert.InRange(level.GetProperty("ttftP50Ms").GetDouble(), ttfts[0], ttfts[^1]);
        }
    }
}
