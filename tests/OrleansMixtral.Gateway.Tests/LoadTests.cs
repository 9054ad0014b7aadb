using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// 32 streaming clients at once on the tiny model: every stream complete, in order, the same as alone, and all 32 in one
/// engine batch.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class LoadTests(GatewayFixture fixture)
{
    const int Clients = 32;
    const int MaxTokens = 24;

    static string Body(int i) =>
        $$$"""{"model":"tiny-mixtral","messages":[{"role":"user","content":"Story {{{i}}}: tell me about the town by the river."}],"max_tokens":{{{MaxTokens}}},"temperature":0.8,"seed":{{{1000 + i}}},"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}""";

    [Fact(Timeout = 180_000)]
    public async Task Thirty_two_concurrent_streams_run_in_one_batch_and_complete_in_order()
    {
        // Each client's reply alone first (seeded sampling: the same text whatever else runs in the batch).
        var alone = new string[Clients];
        for (var i = 0; i < Clients; i++)
        {
            using var response = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", Body(i)), HttpCompletionOption.ResponseHeadersRead);
            alone[i] = (await GatewayFixture.ReadSse(response)).Text;
        }
        await fixture.EngineIdle();
        var generatedBefore = fixture.Engine.Engine.GetStats().TokensGenerated;

        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = Clients }) { BaseAddress = fixture.BaseUrl, Timeout = TimeSpan.FromSeconds(120) };
        var maxBatch = 0;
        using var watching = new CancellationTokenSource();
        var watcher = Task.Run(async () =>
        {
            while (!watching.IsCancellationRequested)
            {
                maxBatch = Math.Max(maxBatch, fixture.Engine.Engine.GetStats().Running);
                await Task.Delay(5);
            }
        });
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var wall = Stopwatch.StartNew();
        var clients = Enumerable.Range(0, Clients).Select(async i =>
        {
            await start.Task;
            var sent = Stopwatch.GetTimestamp();
            using var response = await http.SendAsync(fixture.Post("/v1/chat/completions", Body(i)), HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(200, (int)response.StatusCode);
            var sse = await GatewayFixture.ReadSse(response, sent);
            return (Index: i, Sse: sse, Elapsed: Stopwatch.GetElapsedTime(sent).TotalMilliseconds, Ttft: sse.FirstTokenMs);
        }).ToList();
        start.SetResult();
        var results = await Task.WhenAll(clients);
        wall.Stop();
        watching.Cancel();
        await watcher;

        foreach (var (i, sse, _, _) in results)
        {
            Assert.True(sse.Done, $"stream {i} has no [DONE]");
            Assert.Equal("length", sse.FinishReason);
            Assert.Equal(MaxTokens, sse.Usage!.Value.GetProperty("completion_tokens").GetInt32());
            Assert.Equal(alone[i], sse.Text); // every piece, in order, and nobody else's
            Assert.Single(sse.Events.Select(e => e.GetProperty("id").GetString()).Distinct());
            Assert.Equal("assistant", sse.Events[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        }
        Assert.Equal((long)Clients * MaxTokens, fixture.Engine.Engine.GetStats().TokensGenerated - generatedBefore);
        // Continuous batching: every stream was decoding in the same engine step at some point (the silo runs up to 32).
        Assert.True(maxBatch == Clients, $"the largest engine batch was {maxBatch} sequences, not all {Clients}");
        await fixture.EngineIdle();

        var ttft = results.Select(r => r.Ttft).Order().ToArray();
        var totalTokens = Clients * MaxTokens;
        var line = string.Create(CultureInfo.InvariantCulture,
            $"{Clients} streaming clients x {MaxTokens} tokens (tiny model, CPU, {fixture.Engine.Engine.Info.Backend}): wall {wall.Elapsed.TotalMilliseconds:F0} ms, " +
            $"aggregate {totalTokens / wall.Elapsed.TotalSeconds:F0} tok/s, TTFT p50 {Percentile(ttft, 0.5):F0} ms p95 {Percentile(ttft, 0.95):F0} ms max {ttft[^1]:F0} ms, " +
            $"per-stream {results.Average(r => MaxTokens / (r.Elapsed / 1000.0)):F1} tok/s, largest engine batch {maxBatch}, all {Clients} complete and in order");
        TestContext.Current.SendDiagnosticMessage(line); // figures only: tests write nothing into the repository

        // The metrics saw it.
        var metrics = await fixture.Http.GetStringAsync("/metrics");
        foreach (var name in new[]
                 {
                     "mixtral_gateway_time_to_first_token_seconds_bucket", "mixtral_gateway_inter_token_latency_seconds_bucket",
                     "mixtral_gateway_tokens_per_second", "mixtral_gateway_queued_requests", "mixtral_silo_queue", "mixtral_silo_batch_size",
                     "mixtral_silo_kv_used", "mixtral_silo_tokens_per_second", "orleans_",
                 })
            Assert.Contains(name, metrics);
    }

    static double Percentile(double[] sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
}
