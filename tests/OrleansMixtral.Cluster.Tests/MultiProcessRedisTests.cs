using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OrleansMixtral.Client;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// A real cluster: two silo processes (the silo host) with Redis clustering and Redis grain storage, and this test
/// process as the client. One silo process is killed (SIGKILL) in the middle of a turn.
/// </summary>
public sealed class MultiProcessRedisTests(ITestOutputHelper output)
{
    [Fact(Timeout = 180_000)]
    public async Task Killing_a_silo_process_moves_the_conversation_to_the_other()
    {
        RedisServer.Require();
        await using var redis = await RedisServer.StartAsync();
        var clusterId = "test-" + Guid.NewGuid().ToString("N")[..8];
        string[] args =
        [
            "--Clustering", "redis", "--Redis", redis.ConnectionString, "--Storage", "redis", "--AdvertisedHost", "127.0.0.1",
            "--ClusterId", clusterId, "--Model", "models/tiny-mixtral",
            "--Mixtral:Threads", "1", "--Mixtral:KvCacheMegabytes", "16", "--Mixtral:PrefillChunkTokens", "64",
            "--Mixtral:StallProbeMilliseconds", "2000", "--Mixtral:ProbeTimeoutMilliseconds", "3000",
            "--Membership:ProbeTimeout", "00:00:01", "--Membership:NumMissedProbesLimit", "3",
            "--Membership:NumVotesForDeathDeclaration", "1", "--Membership:TableRefreshTimeout", "00:00:02",
            "--Membership:IAmAliveTablePublishTimeout", "00:00:02",
        ];
        await using var a = SiloProcess.Start(args);
        await using var b = SiloProcess.Start(args);
        try
        {
            await Task.WhenAll(a.Ready(TimeSpan.FromSeconds(60)), b.Ready(TimeSpan.FromSeconds(60)));
            using var host = await ClusterConnection.ConnectAsync("redis://" + redis.ConnectionString, TimeSpan.FromSeconds(30), clusterId,
                logLevel: Microsoft.Extensions.Logging.LogLevel.Error); // connection resets after the kill are expected
            var client = new MixtralClient(host.Services.GetRequiredService<MixtralClient>().Cluster) { Watchdog = new WatchdogTimes(TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(3)) };
            await ClusterFixture.Eventually(() => client.GetEngineLoadsAsync().Result.Count == 2, "both silos to serve", 30);

            var id = (await client.StartConversationAsync(systemPrompt: "You tell stories.")).ConversationId;
            var first = await client.SendAndCollectAsync(id, "Tell me about a lighthouse", ClusterFixture.Short(8));
            Assert.True(first.Succeeded, first.End.Error);
            var before = await client.GetHistoryAsync(id);
            var (victim, survivor) = first.End.Silo == a.SiloKey ? (a, b) : (b, a);
            Assert.Equal(victim.SiloKey, first.End.Silo);
            output.WriteLine($"conversation {id}: grain on {before.GrainSilo}, KV on {victim.SiloKey}; killing it mid-turn");

            var chunks = new List<TokenChunk>();
            var sinceKill = new Stopwatch();
            await foreach (var chunk in client.SendAsync(id, "Now a very long story, please", ClusterFixture.Long(1000)))
            {
                chunks.Add(chunk);
                if (chunks.Count == 5)
                {
                    victim.Kill();
                    sinceKill.Start();
                }
            }
            sinceKill.Stop();
            var end = chunks[^1].End!;
            output.WriteLine($"turn ended {sinceKill.Elapsed.TotalSeconds:F1} s after the kill: {end.Finish}: {end.Error}");
            Assert.Equal(FinishReason.Error, end.Finish);
            Assert.True(sinceKill.Elapsed < TimeSpan.FromSeconds(45), "the client got its error without hanging");

            var sw = Stopwatch.StartNew();
            TurnResult next = null!;
            while (true)
            {
                try
                {
                    next = await client.SendAndCollectAsync(id, "Just one more line", ClusterFixture.Short(8));
                    if (next.Succeeded) break;
                    output.WriteLine($"retrying: {next.End.Error}");
                }
                catch (Exception e) when (sw.Elapsed < TimeSpan.FromSeconds(60))
                {
                    output.WriteLine($"retrying: {e.GetType().Name}: {e.Message}");
                }
                Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), "the conversation continues within a minute");
                await Task.Delay(500);
            }
            output.WriteLine($"next turn on {next.End.Silo} after {sw.Elapsed.TotalSeconds:F1} s: {next.End.Usage}");
            Assert.Equal(survivor.SiloKey, next.End.Silo);
            var after = await client.GetHistoryAsync(id);
            Assert.Equal(survivor.SiloKey, after.GrainSilo);
            Assert.Equal(2, after.Turns);
            Assert.Equal(before.Messages, after.Messages.Take(before.Messages.Length));
            Assert.Equal(before.TokenCount + ClusterFixture.FollowUpIds("Just one more line").Length, next.End.Usage.PromptTokens);
        }
        catch
        {
            output.WriteLine("--- silo A ---\n" + a.Log);
            output.WriteLine("--- silo B ---\n" + b.Log);
            throw;
        }
    }
}
