using System.Diagnostics;
using OrleansMixtral.Client;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>A cluster of its own: this test kills one of its silos.</summary>
public sealed class SiloFailureFixture : ClusterFixture;

/// <summary>A silo dies in the middle of a turn.</summary>
public sealed class SiloFailureTests(SiloFailureFixture fixture, ITestOutputHelper output) : IClassFixture<SiloFailureFixture>
{
    [Fact(Timeout = 120_000)]
    public async Task Killing_the_generating_silo_fails_the_turn_keeps_the_history_and_the_next_turn_moves()
    {
        var client = fixture.Client;
        var cluster = fixture.Cluster;
        // The test cluster keeps its membership table on the first silo: kill another one.
        var primary = cluster.Silos[0].SiloAddress.ToParsableString();
        string id = "", victim = "";
        for (var i = 0; i < 12 && (victim == "" || victim == primary); i++)
        {
            id = (await client.StartConversationAsync()).ConversationId;
            var r = await client.SendAndCollectAsync(id, "Tell me about ships", ClusterFixture.Short(8));
            Assert.True(r.Succeeded, r.End.Error);
            victim = r.End.Silo!;
        }
        Assert.NotEqual(primary, victim);
        var before = await client.GetHistoryAsync(id);
        Assert.Equal(1, before.Turns);
        output.WriteLine($"conversation {id}: grain on {before.GrainSilo}, KV on {victim}");

        var (chunks, sinceKill) = await SendAndKillMidTurn(client, id, "Now tell me a very long story", victim);
        var end = chunks[^1].End!;
        output.WriteLine($"turn ended {sinceKill.Elapsed.TotalSeconds:F1} s after the kill: {end.Finish}: {end.Error}");
        Assert.Equal(FinishReason.Error, end.Finish);
        Assert.True(sinceKill.Elapsed < TimeSpan.FromSeconds(30), "the client got its error promptly");
        Assert.True(chunks.Count < 1000);

        // The history survives (stored outside the silos) and does not contain the interrupted turn.
        ConversationSnapshot after = null!;
        await RetryUntil(async () => after = await client.GetHistoryAsync(id), "the conversation to answer again");
        Assert.Equal(before.Messages, after.Messages);
        Assert.Equal(before.TokenCount, after.TokenCount);

        // The next turn goes to another silo, which prefills the whole history.
        TurnResult next = null!;
        await RetryUntil(async () =>
        {
            next = await client.SendAndCollectAsync(id, "Start again, briefly", ClusterFixture.Short(8));
            if (!next.Succeeded) throw new Exception(next.End.Error);
        }, "a turn to succeed after the kill");
        Assert.NotEqual(victim, next.End.Silo);
        Assert.Equal(before.TokenCount + ClusterFixture.FollowUpIds("Start again, briefly").Length, next.End.Usage.PromptTokens);
        var final = await client.GetHistoryAsync(id);
        Assert.Equal(2, final.Turns);
        Assert.Equal(next.End.Silo, final.KvSilo);
        output.WriteLine($"next turn on {next.End.Silo}: {next.End.Usage}");
    }

    [Fact(Timeout = 120_000)]
    public async Task Killing_the_silo_of_the_conversation_grain_fails_the_turn_and_the_conversation_resumes_elsewhere()
    {
        var client = fixture.Client;
        var cluster = fixture.Cluster;
        var primary = cluster.Silos[0].SiloAddress.ToParsableString();
        string id = "";
        ConversationSnapshot before = null!;
        for (var i = 0; i < 12; i++)
        {
            id = (await client.StartConversationAsync()).ConversationId;
            var r = await client.SendAndCollectAsync(id, "Tell me about trains", ClusterFixture.Short(8));
            Assert.True(r.Succeeded, r.End.Error);
            before = await client.GetHistoryAsync(id);
            if (before.GrainSilo != primary) break;
        }
        var victim = before.GrainSilo!;
        Assert.NotEqual(primary, victim);
        output.WriteLine($"conversation {id}: grain on {victim}, KV on {before.KvSilo}");

        var (chunks, sinceKill) = await SendAndKillMidTurn(client, id, "Now a very long story", victim);
        var end = chunks[^1].End!;
        output.WriteLine($"turn ended {sinceKill.Elapsed.TotalSeconds:F1} s after the kill: {end.Finish}: {end.Error}");
        Assert.NotEqual(FinishReason.Stop, end.Finish);
        Assert.NotEqual(FinishReason.Length, end.Finish);
        Assert.True(sinceKill.Elapsed < TimeSpan.FromSeconds(30), "the client got its error promptly");

        TurnResult next = null!;
        await RetryUntil(async () =>
        {
            next = await client.SendAndCollectAsync(id, "Again, briefly", ClusterFixture.Short(8));
            if (!next.Succeeded) throw new Exception(next.End.Error);
        }, "a turn to succeed after the kill");
        var after = await client.GetHistoryAsync(id);
        Assert.NotEqual(victim, after.GrainSilo);
        Assert.Equal(2, after.Turns);
        Assert.Equal(before.Messages, after.Messages.Take(before.Messages.Length));
    }

    async Task RetryUntil(Func<Task> attempt, string what)
    {
        var until = DateTime.UtcNow.AddSeconds(40);
        while (true)
        {
            try
            {
                await attempt();
                return;
            }
            catch (Exception e) when (DateTime.UtcNow < until)
            {
                output.WriteLine($"waiting for {what}: {e.GetType().Name}: {e.Message}");
                await Task.Delay(500);
            }
        }
    }

    /// <summary>Sends a long turn and kills silo <paramref name="victim"/> once five chunks have arrived; returns every chunk and the time from the kill to the turn's end.</summary>
    async Task<(List<TokenChunk> Chunks, Stopwatch SinceKill)> SendAndKillMidTurn(MixtralClient client, string id, string text, string victim)
    {
        var cluster = fixture.Cluster;
        var handle = cluster.Silos.Single(s => s.SiloAddress.ToParsableString() == victim);
        var chunks = new List<TokenChunk>();
        var sinceKill = new Stopwatch();
        Task? kill = null;
        await foreach (var chunk in client.SendAsync(id, text, ClusterFixture.Long(1000)))
        {
            chunks.Add(chunk);
            if (chunks.Count == 5)
            {
                sinceKill.Start();
                kill = cluster.KillSiloAsync(handle);
            }
        }
        sinceKill.Stop();
        await kill!;
        return (chunks, sinceKill);
    }
}
