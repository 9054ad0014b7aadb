using System.Text.Json;
using OrleansMixtral.LoadBench;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// src/OrleansMixtral.ClusterBench's load mode (`--rate`), run as its own process as one would run it: a one-silo
/// cluster with the tiny model, requests as turns through the Orleans client, the report of `mixtral bench --rate`.
/// </summary>
public sealed class ClusterBenchLoadTests : IDisposable
{
    readonly string _json = Path.Combine(Path.GetTempPath(), "clusterbench-load-" + Guid.NewGuid().ToString("N") + ".json");
    readonly string _png = Path.Combine(Path.GetTempPath(), "clusterbench-load-" + Guid.NewGuid().ToString("N") + ".png");

    public void Dispose()
    {
        File.Delete(_json);
        File.Delete(_png);
    }

    static Task<(int ExitCode, string Out, string Err)> Run(params string[] args) =>
        ChildProgram.RunAsync("OrleansMixtral.ClusterBench", TimeSpan.FromMinutes(3), args);

    [Fact]
    public async Task Two_rates_through_the_cluster_to_a_table_a_json_file_and_a_plot()
    {
        var (code, stdout, stderr) = await Run("--rate", "20,50", "--requests", "5", "--prompt-tokens", "24", "--output-tokens", "4", "--seed", "2",
            "--json", _json, "--plot", _png);
        Assert.True(code == 0, $"exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        Assert.Contains("| rate /s | sent | failed |", stdout);
        Assert.Contains("through the cluster", stdout);

        using var doc = JsonDocument.Parse(File.ReadAllText(_json));
        JsonElement j = doc.RootElement;
        Assert.Equal("cluster", j.GetProperty("path").GetString());
        Assert.Equal("tiny-mixtral", j.GetProperty("model").GetString());
        Assert.Equal(1, j.GetProperty("cluster").GetProperty("silos").GetInt32());
        JsonElement settings = j.GetProperty("settings");
        Assert.Equal([20.0, 50.0], settings.GetProperty("rates").EnumerateArray().Select(x => x.GetDouble()));
        Assert.Equal((5, 24, 4, 2), (settings.GetProperty("requests").GetInt32(), settings.GetProperty("promptTokens").GetInt32(),
            settings.GetProperty("outputTokens").GetInt32(), settings.GetProperty("seed").GetInt32()));

        JsonElement[] rates = j.GetProperty("rates").EnumerateArray().ToArray();
        Assert.Equal([20.0, 50.0], rates.Select(r => r.GetProperty("rate").GetDouble()));
        foreach (JsonElement rate in rates)
        {
            Assert.Equal((5, 5, 0, 20), (rate.GetProperty("sent").GetInt32(), rate.GetProperty("completed").GetInt32(),
                rate.GetProperty("failed").GetInt32(), rate.GetProperty("outputTokens").GetInt32()));
            Assert.Equal(5 * 3, rate.GetProperty("itlMs").GetProperty("count").GetInt32());
            Assert.Equal(5, rate.GetProperty("ttftMs").GetProperty("count").GetInt32());
            // the same schedule as `mixtral bench --rate` with this seed
            double[] schedule = ArrivalSchedule.Poisson(rate.GetProperty("rate").GetDouble(), 2, 5, null);
            JsonElement[] requests = rate.GetProperty("requests").EnumerateArray().ToArray();
            Assert.Equal(schedule.Select(t => Math.Round(t, 6)), requests.Select(q => q.GetProperty("arrivalSeconds").GetDouble()));
            foreach (JsonElement q in requests)
            {
                // the chat-templated message is exactly the asked length; the engine's own TTFT lies within the caller's
                Assert.Equal((24, 4, "Length"), (q.GetProperty("promptTokens").GetInt32(), q.GetProperty("outputTokens").GetInt32(), q.GetProperty("finish").GetString()));
                double ttft = q.GetProperty("ttftMs").GetDouble();
                Assert.InRange(q.GetProperty("engineTtftMs").GetDouble(), 0.001, ttft);
                Assert.InRange(ttft, 0.001, q.GetProperty("endToEndMs").GetDouble());
            }
        }
        byte[] png = File.ReadAllBytes(_png);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
    }

    [Theory]
    [InlineData("needs --rate", "--requests", "5")]
    [InlineData("--requests", "--rate", "2", "--requests", "0")]
    [InlineData("exclusive", "--rate", "2", "--requests", "5", "--duration", "1")]
    [InlineData("unknown option --runs", "--rate", "2", "--runs", "3")]
    [InlineData("--threads", "--rate", "2", "--threads", "many")]
    // conversation mode (--concurrency): against a running cluster, one kill at a time within the run
    [InlineData("give --cluster", "--concurrency", "4")]
    [InlineData("--kill-pid and --kill-at go together", "--cluster", "localhost:30000", "--concurrency", "4", "--kill-pid", "42")]
    [InlineData("--kill-at must come before the end of --duration", "--cluster", "localhost:30000", "--concurrency", "4", "--kill-pid", "42", "--kill-at", "30")]
    [InlineData("unknown option --rate with --concurrency", "--cluster", "localhost:30000", "--concurrency", "4", "--rate", "2")]
    public async Task Bad_load_arguments_exit_2_with_the_usage(string message, params string[] args)
    {
        var (code, stdout, stderr) = await Run(args);
        Assert.True(code == 2, $"exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        Assert.Contains(message, stderr);
        Assert.Contains("usage:", stderr);
        Assert.Equal("", stdout);
    }
}
