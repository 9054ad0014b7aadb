using System.Globalization;
using System.Text.Json;
using OrleansMixtral.LoadBench;

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

    [Fact]
    public void Two_rates_of_poisson_arrivals_to_a_table_a_json_file_and_a_plot()
    {
        var r = Cli.Run("bench", "--model", Cli.Model, "--rate", "20,50", "--requests", "6", "--prompt-tokens", "16", "--output-tokens", "6",
            "--seed", "3", "--json", _file, "--plot", _png);
        Assert.True(r.ExitCode == 0, r.ToString());
        foreach (string column in new[] { "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "E2E p99", "out tok/s" }) Assert.Contains(column, r.Out);
        Assert.Contains("Poisson arrivals, 16 prompt + 6 output tokens", r.Out);

        using var doc = JsonDocument.Parse(File.ReadAllText(_file));
        JsonElement j = doc.RootElement;
        Assert.Equal(["date", "machine", "model", "backend", "int8", "path", "settings", "gpuMemory", "rates"], j.EnumerateObject().Select(p => p.Name));
        Assert.Equal("engine", j.GetProperty("path").GetString());
        Assert.Equal("tiny-mixtral", j.GetProperty("model").GetProperty("name").GetString());

        JsonElement settings = j.GetProperty("settings");
        Assert.Equal([20.0, 50.0], settings.GetProperty("rates").EnumerateArray().Select(x => x.GetDouble()));
        Assert.Equal(6, settings.GetProperty("requests").GetInt32());
        Assert.Equal(JsonValueKind.Null, settings.GetProperty("durationSeconds").ValueKind);
        Assert.Equal((16, 6, 3, 512), (settings.GetProperty("promptTokens").GetInt32(), settings.GetProperty("outputTokens").GetInt32(),
            settings.GetProperty("seed").GetInt32(), settings.GetProperty("prefillChunkTokens").GetInt32()));
        Assert.Equal("poisson", settings.GetProperty("arrivals").GetString());
        Assert.True(settings.GetProperty("greedy").GetBoolean() && settings.GetProperty("ignoreEos").GetBoolean());

        JsonElement[] rates = j.GetProperty("rates").EnumerateArray().ToArray();
        Assert.Equal([20.0, 50.0], rates.Select(x => x.GetProperty("rate").GetDouble()));
        foreach (JsonElement rate in rates)
        {
            double[] schedule = ArrivalSchedule.Poisson(rate.GetProperty("rate").GetDouble(), 3, 6, null);
            Assert.Equal((6, 6, 0, 36), (rate.GetProperty("sent").GetInt32(), rate.GetProperty("completed").GetInt32(),
                rate.GetProperty("failed").GetInt32(), rate.GetProperty("outputTokens").GetInt32()));
            double wall = rate.GetProperty("wallSeconds").GetDouble();
            Assert.True(wall >= schedule[^1], $"wall {wall} s, last arrival {schedule[^1]} s");
            Assert.Equal(36 / wall, rate.GetProperty("outputTokensPerSecond").GetDouble(), 0.01 * 36 / wall);
            Assert.Equal(6 / wall, rate.GetProperty("requestsPerSecond").GetDouble(), 0.01 * 6 / wall);
            Assert.Equal(Math.Round(schedule[^1], 6), rate.GetProperty("scheduleSeconds").GetDouble());
            Assert.InRange(rate.GetProperty("maxInFlight").GetInt32(), 1, 6);

            foreach ((string name, int count) in new[] { ("ttftMs", 6), ("itlMs", 6 * 5), ("endToEndMs", 6) })
            {
                JsonElement l = rate.GetProperty(name);
                Assert.Equal(["count", "mean", "min", "p50", "p90", "p99", "max"], l.EnumerateObject().Select(p => p.Name));
                Assert.Equal(count, l.GetProperty("count").GetInt32());
                double[] v = new[] { "min", "p50", "p90", "p99", "max" }.Select(k => l.GetProperty(k).GetDouble()).ToArray();
                Assert.True(v.SequenceEqual(v.Order()) && v[0] >= 0, $"{name}: {l}");
            }

            JsonElement[] requests = rate.GetProperty("requests").EnumerateArray().ToArray();
            Assert.Equal(Enumerable.Range(0, 6), requests.Select(q => q.GetProperty("index").GetInt32()));
            Assert.Equal(schedule.Select(t => Math.Round(t, 6)), requests.Select(q => q.GetProperty("arrivalSeconds").GetDouble()));
            foreach (JsonElement q in requests)
            {
                Assert.Equal((16, 6, "Length"), (q.GetProperty("promptTokens").GetInt32(), q.GetProperty("outputTokens").GetInt32(), q.GetProperty("finish").GetString()));
                double ttft = q.GetProperty("ttftMs").GetDouble(), e2e = q.GetProperty("endToEndMs").GetDouble();
                Assert.InRange(ttft, 0.001, e2e);
                Assert.True(q.GetProperty("sendLagMs").GetDouble() >= 0);
                Assert.False(q.TryGetProperty("error", out _));
            }
            double[] ttfts = requests.Select(q => q.GetProperty("ttftMs").GetDouble()).Order().ToArray();
            Assert.Equal(Math.Round(Percentiles.OfSorted(ttfts, 0.5), 3), rate.GetProperty("ttftMs").GetProperty("p50").GetDouble(), 0.002);
            Assert.Equal(ttfts[^1], rate.GetProperty("ttftMs").GetProperty("max").GetDouble());
        }

        var bytes = File.ReadAllBytes(_png);
        Assert.True(bytes.Length > 10_000, $"{bytes.Length} bytes");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
    }

    [Fact]
    public void A_duration_sends_every_arrival_within_it()
    {
        var r = Cli.Run("bench", "--model", Cli.Model, "--rate", "40", "--duration", "0.5", "--prompt-tokens", "8", "--output-tokens", "2", "--json", _file);
        Assert.True(r.ExitCode == 0, r.ToString());

        using var doc = JsonDocument.Parse(File.ReadAllText(_file));
        JsonElement settings = doc.RootElement.GetProperty("settings");
        Assert.Equal(JsonValueKind.Null, settings.GetProperty("requests").ValueKind);
        Assert.Equal(0.5, settings.GetProperty("durationSeconds").GetDouble());
        JsonElement rate = Assert.Single(doc.RootElement.GetProperty("rates").EnumerateArray());
        double[] schedule = ArrivalSchedule.Poisson(40, 0, null, 0.5);
        Assert.Equal(schedule.Length, rate.GetProperty("sent").GetInt32());
        Assert.Equal(schedule.Length, rate.GetProperty("completed").GetInt32());
        Assert.True(rate.GetProperty("scheduleSeconds").GetDouble() < 0.5);
    }
}
