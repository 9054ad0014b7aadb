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

    /// <summary>
    /// How long each phase may take: a stream that never ends (the HTTP client's timeout covers the headers, not the body)
    /// fails the test with what every stream and the engine were doing, instead of hanging until the test's own timeout
    /// (which leaves no clue; it hung once, in 1 of 3 CI runs).
    /// </summary>
    static readonly TimeSpan AlonePhase = TimeSpan.FromSeconds(60), ConcurrentPhase = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 180_000)]
    public async Task Thirty_two_concurrent_streams_run_in_one_batch_and_complete_in_order()
    {
        // Each client's reply alone first (seeded sampling: the same text whatever else runs in the batch).
        var alone = new string[Clients];
        using (var deadline = new CancellationTokenSource(AlonePhase))
        {
            for (var i = 0; i < Clients; i++)
            {
                try
                {
                    using var response = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", Body(i)), HttpCompletionOption.ResponseHeadersRead, deadline.Token);
                    alone[i] = (await GatewayFixture.ReadSse(response, ct: deadline.Token)).Text;
                }
                catch (OperationCanceledException) when (deadline.IsCancellationRequested)
                {
                    Assert.Fail($"the replies alone did not all end within {AlonePhase.TotalSeconds:F0} s: stream {i} of {Clients} was still open; {EngineState()}");
                }
            }
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
        var progress = new string[Clients]; // where each client is, for the message of a phase that does not end
        using var concurrentDeadline = new CancellationTokenSource(ConcurrentPhase);
        var wall = Stopwatch.StartNew();
        var clients = Enumerable.Range(0, Clients).Select(async i =>
        {
            await start.Task;
            var sent = Stopwatch.GetTimestamp();
            progress[i] = "sent";
            using var response = await http.SendAsync(fixture.Post("/v1/chat/completions", Body(i)), HttpCompletionOption.ResponseHeadersRead, concurrentDeadline.Token);
            progress[i] = $"HTTP {(int)response.StatusCode}, reading";
            Assert.Equal(200, (int)response.StatusCode);
            var sse = await GatewayFixture.ReadSse(response, sent, concurrentDeadline.Token);
            progress[i] = "ended";
            return (Index: i, Sse: sse, Elapsed: Stopwatch.GetElapsedTime(sent).TotalMilliseconds, Ttft: sse.FirstTokenMs);
        }).ToList();
        start.SetResult();
        (int Index, GatewayFixture.SseReply Sse, double Elapsed, double Ttft)[] results = [];
        try { results = await Task.WhenAll(clients); }
        catch (OperationCanceledException) when (concurrentDeadline.IsCancellationRequested)
        {
            var open = Enumerable.Range(0, Clients).Where(i => progress[i] != "ended").Select(i => $"{i}: {progress[i] ?? "not sent"}");
            Assert.Fail($"the {Clients} concurrent streams did not all end within {ConcurrentPhase.TotalSeconds:F0} s; still open: {string.Join(", ", open)}; " +
                        $"largest batch so far {maxBatch}; {EngineState()}");
        }
        finally
        {
            wall.Stop();
            watching.Cancel();
            await watcher;
        }

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

    /// <summary>The engine's and the gateway's state, for a failure message.</summary>
    string EngineState()
    {
        var s = fixture.Engine.Engine.GetStats();
        return $"engine: {s.Running} running, {s.Waiting} waiting, KV blocks {s.KvBlocksUsed} of {s.KvBlocksTotal} in use, " +
               $"{s.Preemptions} preemptions, {s.TokensGenerated} tokens generated; {fixture.Engine.RunningTurns} turns registered with the silo";
    }

    static double Percentile(double[] sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
}
