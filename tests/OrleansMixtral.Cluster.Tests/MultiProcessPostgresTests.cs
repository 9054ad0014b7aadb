using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using OrleansMixtral.Client;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// The production set-up on one machine: two silo processes (the silo host) with PostgreSQL clustering and PostgreSQL
/// conversation storage (the project's schema), and this test process as a client that finds the gateways in the
/// database. The silo holding the conversation is killed (SIGKILL): its history is intact through the other.
/// </summary>
public sealed class MultiProcessPostgresTests(ITestOutputHelper output)
{
    [Fact(Timeout = 240_000)]
    public async Task Killing_the_silo_of_a_conversation_keeps_its_history_intact_through_the_other()
    {
        PostgresServer.Require();
        await using var postgres = await PostgresServer.StartAsync();
        var clusterId = "test-" + Guid.NewGuid().ToString("N")[..8];
        string[] args =
        [
            "--Clustering", "postgres", "--Storage", "postgres", "--Postgres", postgres.ConnectionString, "--AdvertisedHost", "127.0.0.1",
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
            await Task.WhenAll(a.Ready(TimeSpan.FromSeconds(90)), b.Ready(TimeSpan.FromSeconds(90)));
            using var host = await ClusterConnection.ConnectAsync("postgres:" + postgres.ConnectionString, TimeSpan.FromSeconds(30), clusterId,
                logLevel: Microsoft.Extensions.Logging.LogLevel.Error); // connection resets after the kill are expected
            var client = new MixtralClient(host.Services.GetRequiredService<MixtralClient>().Cluster) { Watchdog = new WatchdogTimes(TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(3)) };
            await ClusterFixture.Eventually(() => client.GetEngineLoadsAsync().Result.Count == 2, "both silos to serve", 30);

            var id = (await client.StartConversationAsync(systemPrompt: "You tell stories.")).ConversationId;
            foreach (var message in new[] { "Tell me about a lighthouse", "And its keeper" })
            {
                var turn = await client.SendAndCollectAsync(id, message, ClusterFixture.Short(8));
                Assert.True(turn.Succeeded, turn.End.Error);
            }
            var before = await client.GetHistoryAsync(id);
            var beforeTokens = await client.Conversation(id).GetTokens();
            Assert.Equal(2, before.Turns);
            var (victim, survivor) = before.GrainSilo == a.SiloKey ? (a, b) : (b, a);
            Assert.Equal(victim.SiloKey, before.GrainSilo);
            output.WriteLine($"conversation {id}: grain on {before.GrainSilo}, KV on {before.KvSilo}; killing the grain's silo");
            victim.Kill();

            // Through the survivor: the same history, exact token ids and all, then the next turn builds on it.
            var sw = Stopwatch.StartNew();
            ConversationSnapshot after;
            while (true)
            {
                try
                {
                    after = await client.GetHistoryAsync(id).WaitAsync(TimeSpan.FromSeconds(5));
                    if (after.GrainSilo == survivor.SiloKey) break;
                }
                catch (Exception e) when (sw.Elapsed < TimeSpan.FromSeconds(60))
                {
                    output.WriteLine($"retrying: {e.GetType().Name}: {e.Message}");
                }
                Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), "the conversation is served by the survivor within a minute");
                await Task.Delay(500);
            }
            output.WriteLine($"history read through {after.GrainSilo} {sw.Elapsed.TotalSeconds:F1} s after the kill");
            Assert.Equal(before.Messages, after.Messages);
            Assert.Equal(2, after.Turns);
            Assert.Equal(beforeTokens, await client.Conversation(id).GetTokens());

            TurnResult next = null!;
            while (true)
            {
                next = await client.SendAndCollectAsync(id, "Just one more line", ClusterFixture.Short(8));
                if (next.Succeeded) break;
                output.WriteLine($"retrying: {next.End.Error}");
                Assert.True(sw.Elapsed < TimeSpan.FromSeconds(90), "the conversation continues");
                await Task.Delay(500);
            }
            Assert.Equal(survivor.SiloKey, next.End.Silo);
            Assert.Equal(beforeTokens.Length + ClusterFixture.FollowUpIds("Just one more line").Length, next.End.Usage.PromptTokens);
            var last = await client.GetHistoryAsync(id);
            Assert.Equal(3, last.Turns);
            Assert.Equal(before.Messages, last.Messages.Take(before.Messages.Length));
        }
        catch
        {
            output.WriteLine("--- silo A ---\n" + a.Log);
            output.WriteLine("--- silo B ---\n" + b.Log);
            throw;
        }
    }
}
