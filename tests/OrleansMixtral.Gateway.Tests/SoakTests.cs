using System.Text.Json;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// ClusterBench's soak mode (src/OrleansMixtral.ClusterBench, <c>soak</c>) run as its own process against the test
/// gateway, as one would run it against a real one: conversations through the gateway, every stream and stored history
/// checked, a report per interval with the watched process's memory, the JSON.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class SoakTests(GatewayFixture fixture) : IDisposable
{
    readonly string _json = Path.Combine(Path.GetTempPath(), "soak-" + Guid.NewGuid().ToString("N") + ".json");

    public void Dispose() => File.Delete(_json);

    static Task<(int ExitCode, string Out, string Err)> Run(params string[] args) =>
        ChildProgram.RunAsync("OrleansMixtral.ClusterBench", TimeSpan.FromMinutes(2), args);

    [Fact(Timeout = 120_000)]
    public async Task A_short_soak_checks_every_stream_and_history_and_reports_memory_per_interval()
    {
        var (code, stdout, stderr) = await Run("soak", "--gateway", fixture.BaseUrl.ToString(), "--api-key", GatewayFixture.KeyA,
            "--conversations", "3", "--duration", "8s", "--report-every", "3s", "--turns", "2", "--max-tokens", "6",
            "--watch", Environment.ProcessId.ToString(), "--watch-name", "no-process-has-this-name", "--json", _json);
        Assert.True(code == 0, $"exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        Assert.Contains("errors: none", stdout);

        using var doc = JsonDocument.Parse(File.ReadAllText(_json));
        var root = doc.RootElement;
        Assert.Equal(3, root.GetProperty("settings").GetProperty("conversations").GetInt32());
        var total = root.GetProperty("total");
        Assert.True(total.GetProperty("turns_ok").GetInt32() >= 6, total.ToString());
        Assert.Equal(0, total.GetProperty("turns_failed").GetInt32());
        Assert.True(total.GetProperty("histories_verified").GetInt32() >= 3, total.ToString());
        Assert.Equal(0, total.GetProperty("history_mismatches").GetInt32());
        Assert.Empty(total.GetProperty("errors").EnumerateObject());
        Assert.True(total.GetProperty("ttft_ms").GetProperty("p50").GetDouble() > 0);
        Assert.True(total.GetProperty("itl_ms").GetProperty("p99").GetDouble() > 0);
        // An entry per interval (and the last), each with the watched process's resident memory.
        var intervals = root.GetProperty("intervals").EnumerateArray().ToList();
        Assert.InRange(intervals.Count, 2, 5);
        var label = $"pid {Environment.ProcessId}";
        Assert.All(intervals, i => Assert.True(i.GetProperty("rss_mb").GetProperty(label).GetDouble() > 10));
        var memory = root.GetProperty("memory").GetProperty(label);
        Assert.Equal(intervals.Count + 1, memory.GetProperty("rss_mb").GetArrayLength()); // the start, then each interval
    }

    [Fact(Timeout = 60_000)]
    public async Task Bad_options_are_a_usage_error_and_a_gateway_that_does_not_answer_is_one_line()
    {
        var (code, _, stderr) = await Run("soak", "--conversations", "zero");
        Assert.Equal(2, code);
        Assert.Contains("--conversations", stderr);
        Assert.Contains("usage:", stderr);

        (code, _, stderr) = await Run("soak", "--gateway", $"http://127.0.0.1:{Cluster.Tests.RedisServer.FreePort()}", "--duration", "2s");
        Assert.Equal(1, code);
        Assert.StartsWith("error: the gateway at", stderr.Trim());
    }
}
