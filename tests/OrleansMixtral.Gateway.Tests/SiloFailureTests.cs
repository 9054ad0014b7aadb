using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Orleans;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// A silo of a two-silo cluster (two silo host processes on this machine, sharing the SQLite conversation database of
/// one data directory) is killed (SIGKILL) or frozen (SIGSTOP) under the gateway: every request after that either succeeds
/// through the live silo or is a 503 with Retry-After within 2 s; none is a 500 and none waits for Orleans' 30 s response
/// timeout; after a kill every conversation goes on through the live silo. Streams cut by the fault end with an error
/// event of one short line.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class SiloFailureTests(GatewayFixture fixture, ITestOutputHelper output)
{
    sealed record Outcome(string What, int Status, double Seconds, bool RetryAfter, string Body);

    /// <param name="fault">
    /// kill: SIGKILL (its connections reset: calls to it are rejected at once); freeze: SIGSTOP (its connections stay open and
    /// nothing answers, as for a machine gone from the network: calls to it would wait for Orleans' 30 s response timeout).
    /// </param>
    /// <param name="clustering">
    /// localhost: the gateway is given both silos' gateways (a fixed list); redis: it reads them from the membership table
    /// in Redis, which leaves a silo out once the cluster has declared it dead.
    /// </param>
    [Theory(Timeout = 180_000)]
    [InlineData("kill", "localhost")]
    [InlineData("freeze", "localhost")]
    [InlineData("freeze", "redis")]
    public async Task After_a_silo_dies_requests_succeed_through_the_live_silo_or_get_503_with_Retry_After_within_2_s(string fault, string clustering)
    {
        var data = Directory.CreateTempSubdirectory("mixtral-gateway-kill-").FullName;
        string[] args =
        [
            "--Model", "models/tiny-mixtral", "--DataDirectory", data, "--ClusterId", "mixtral", "--ServiceId", "mixtral",
            "--Mixtral:Threads", "1", "--Mixtral:KvCacheMegabytes", "16", "--Mixtral:PrefillChunkTokens", "64",
            "--Mixtral:StallProbeMilliseconds", "1000", "--Mixtral:ProbeTimeoutMilliseconds", "1000",
            "--Membership:ProbeTimeout", "00:00:01", "--Membership:NumMissedProbesLimit", "3",
            "--Membership:NumVotesForDeathDeclaration", "1", "--Membership:TableRefreshTimeout", "00:00:02",
            "--Membership:IAmAliveTablePublishTimeout", "00:00:02",
        ];
        Cluster.Tests.RedisServer? redis = null;
        if (clustering == "redis")
        {
            Cluster.Tests.RedisServer.Require();
            redis = await Cluster.Tests.RedisServer.StartAsync();
            args = [.. args, "--Clustering", "redis", "--Redis", redis.ConnectionString, "--AdvertisedHost", "127.0.0.1"];
        }
        await using var redisServer = redis;
        var primaryPort = Cluster.Tests.RedisServer.FreePort();
        await using var primary = Cluster.Tests.SiloProcess.Start([.. args, "--PrimarySiloPort", $"{primaryPort}"], primaryPort, Cluster.Tests.RedisServer.FreePort());
        await primary.Ready(TimeSpan.FromSeconds(90));
        await using var victim = Cluster.Tests.SiloProcess.Start([.. args, "--PrimarySiloPort", $"{primary.SiloPort}"]);
        try
        {
            await victim.Ready(TimeSpan.FromSeconds(90));
            await Run(primary, victim, fault, redis is null ? null : "redis://" + redis.ConnectionString);
        }
        catch
        {
            output.WriteLine("--- primary silo ---\n" + Tail(primary.Log));
            output.WriteLine("--- victim silo ---\n" + Tail(victim.Log));
            throw;
        }
        finally
        {
            try { Directory.Delete(data, recursive: true); } catch (IOException) { }
        }
    }

    /// <param name="membership">The cluster's membership table (redis://…), where the gateway finds the silos' gateways; null: a fixed list of both.</param>
    async Task Run(Cluster.Tests.SiloProcess primarySilo, Cluster.Tests.SiloProcess victimSilo, string fault, string? membership)
    {
        var logs = new LogCapture();
        var (app, url) = await fixture.StartGatewayOverAsync(null, new()
        {
            ["Cluster"] = membership ?? $"127.0.0.1:{primarySilo.GatewayPort},127.0.0.1:{victimSilo.GatewayPort}",
            ["ClusterId"] = "mixtral",
            ["Gateway:EnginePollMilliseconds"] = "250",
        }, logs);
        // Through a membership table a frozen silo is left out once declared dead, and its conversations go on elsewhere.
        var recovers = fault == "kill" || membership is not null;
        try { await Run(app, url, primarySilo, victimSilo, fault, recovers); }
        catch
        {
            foreach (var line in logs.Lines.Where(l => l.StartsWith("Error") || l.StartsWith("Warning")).Take(10)) output.WriteLine("gateway: " + line);
            throw;
        }
    }

    async Task Run(Microsoft.AspNetCore.Builder.WebApplication app, Uri url, Cluster.Tests.SiloProcess primarySilo, Cluster.Tests.SiloProcess victimSilo, string fault,
        bool recovers)
    {
        var cluster = app.Services.GetRequiredService<IClusterClient>();
        using var http = new HttpClient { BaseAddress = url, Timeout = TimeSpan.FromSeconds(60) };
        var primary = primarySilo.SiloKey!;
        var victimKey = victimSilo.SiloKey!;
        await GatewayFixture.Eventually(() =>
        {
            using var health = http.Send(new HttpRequestMessage(HttpMethod.Get, "/health"));
            return JsonDocument.Parse(health.Content.ReadAsStream()).RootElement.GetProperty("engines").GetArrayLength() == 2;
        }, "both engines to answer", 30);

        // Conversations with one turn each, until three have their grain on the victim (and some their KV only).
        var grainOnVictim = new List<(string Id, ConversationSnapshot Before)>();
        var kvOnVictim = new List<(string Id, ConversationSnapshot Before)>();
        for (var i = 0; i < 40 && grainOnVictim.Count < 3; i++)
        {
            using var created = await http.SendAsync(Post("/v1/chat/completions", GatewayFixture.ChatBody("Tell me about ships", 4), "new"));
            Assert.Equal(200, (int)created.StatusCode);
            var id = created.Headers.GetValues("X-Conversation-Id").Single();
            var snapshot = await cluster.GetGrain<IConversationGrain>(ConversationIds.GrainKey(ApiKeys.Local, id)!).GetSnapshot();
            if (snapshot.GrainSilo == victimKey) grainOnVictim.Add((id, snapshot));
            else if (snapshot.KvSilo == victimKey && kvOnVictim.Count < 2) kvOnVictim.Add((id, snapshot));
        }
        output.WriteLine($"{grainOnVictim.Count} conversations with their grain on the victim {victimKey}, {kvOnVictim.Count} with only their KV there");
        Assert.True(grainOnVictim.Count >= 2, "no conversation grain on the victim");
        // Some are cut mid-stream by the kill; the others get every kind of request after it.
        List<(string Id, ConversationSnapshot Before)> cut = [grainOnVictim[0], .. kvOnVictim], onVictim = grainOnVictim[1..];

        var streams = cut.Select(c => http.SendAsync(
            Post("/v1/chat/completions", GatewayFixture.ChatBody("Now a very long story", 900, stream: true, extra: ""","ignore_eos":true"""), c.Id),
            HttpCompletionOption.ResponseHeadersRead)).ToList();
        var opened = await Task.WhenAll(streams);
        var readers = opened.Select(r => ReadEvents(r)).ToList();
        await Task.Delay(300);
        if (fault == "kill") victimSilo.Kill(); // SIGKILL: no goodbye to the cluster
        else
        {
            using var stop = System.Diagnostics.Process.Start("kill", ["-STOP", $"{victimSilo.ProcessId}"]);
            await stop.WaitForExitAsync();
            Assert.Equal(0, stop.ExitCode);
        }
        var killedAt = Stopwatch.GetTimestamp();

        // Every kind of conversation request, again and again, until each conversation has had a turn through the live silo.
        var outcomes = new ConcurrentBag<Outcome>();
        var succeeded = new ConcurrentDictionary<string, ConversationSnapshot>();
        var succeededAt = new ConcurrentDictionary<string, double>();
        async Task<Outcome> Send(string what, Func<HttpRequestMessage> request)
        {
            var started = Stopwatch.GetTimestamp();
            using var response = await http.SendAsync(request());
            var body = await response.Content.ReadAsStringAsync();
            var o = new Outcome(what, (int)response.StatusCode, Stopwatch.GetElapsedTime(started).TotalSeconds, response.Headers.RetryAfter is not null, body);
            outcomes.Add(o);
            return o;
        }
        var loops = onVictim.Select(async c =>
        {
            // A frozen silo's connections stay open, and a fixed gateway list keeps it: Orleans' client routes the grains it
            // had placed there to it until the process goes (not within a test); what must hold is the bound.
            while (recovers ? !succeeded.ContainsKey(c.Id) && Stopwatch.GetElapsedTime(killedAt) < TimeSpan.FromSeconds(60)
                       : Stopwatch.GetElapsedTime(killedAt) < TimeSpan.FromSeconds(5))
            {
                await Send("get", () => new HttpRequestMessage(HttpMethod.Get, $"/v1/conversations/{c.Id}"));
                var turn = await Send("turn", () => Post("/v1/chat/completions", GatewayFixture.ChatBody("Again, briefly", 4), c.Id));
                await Send("stream", () => Post("/v1/chat/completions", GatewayFixture.ChatBody("And once more", 4, stream: true), c.Id));
                if (turn.Status == 200)
                {
                    succeededAt.TryAdd(c.Id, Stopwatch.GetElapsedTime(killedAt).TotalSeconds);
                    succeeded[c.Id] = await cluster.GetGrain<IConversationGrain>(ConversationIds.GrainKey(ApiKeys.Local, c.Id)!).GetSnapshot();
                }
                else await Task.Delay(200);
            }
        }).ToList();
        var others = Task.Run(async () =>
        {
            while (Stopwatch.GetElapsedTime(killedAt) < TimeSpan.FromSeconds(5))
            {
                await Send("create", () => Post("/v1/conversations", "{}", null));
                await Send("new", () => Post("/v1/chat/completions", GatewayFixture.ChatBody("Hello", 4), "new"));
                await Send("stateless", () => Post("/v1/chat/completions", GatewayFixture.ChatBody("Hello", 4), null));
                await Task.Delay(100);
            }
        });
        await Task.WhenAll([.. loops, others]);
        var events = await Task.WhenAll(readers);

        foreach (var group in outcomes.GroupBy(o => (o.What, o.Status)).OrderBy(g => g.Key))
            output.WriteLine($"{group.Key.What} {group.Key.Status}: {group.Count()}, slowest {group.Max(o => o.Seconds):F2} s");
        var bad = outcomes.Where(o => o.Status is not (200 or 503) || (o.Status == 503 && (!o.RetryAfter || o.Seconds > 2.0 || !ShortLine(o.Body, victimKey)))
                                      || o.Seconds > 10).ToList();
        Assert.True(bad.Count == 0, "requests that got neither a success nor a prompt 503 with Retry-After:\n" +
            string.Join('\n', bad.Take(20).Select(o => $"{o.What} {o.Status} in {o.Seconds:F2} s (Retry-After {o.RetryAfter}): {Clip(o.Body)}")));

        // Each conversation went on through the live silo, its history intact.
        foreach (var (id, before) in recovers ? onVictim : [])
        {
            Assert.True(succeeded.TryGetValue(id, out var after), $"conversation {id} never had a turn after the {fault}");
            output.WriteLine($"conversation {id}: a turn through the live silo {succeededAt[id]:F1} s after the {fault}");
            Assert.Equal(primary, after.GrainSilo);
            Assert.Equal(before.Messages, after.Messages.Take(before.Messages.Length));
        }

        // The cut streams: an error event of one short line (no stack trace, no addresses, no source paths), no [DONE].
        foreach (var e in events)
        {
            output.WriteLine($"stream: {e.Count} events, last: {Clip(e.LastOrDefault() ?? "")}");
            var last = e.LastOrDefault();
            Assert.NotEqual("(connection lost)", last);
            if (last is null || last == "[DONE]") continue; // finished before the kill
            var error = JsonDocument.Parse(last).RootElement.GetProperty("error");
            var message = error.GetProperty("message").GetString()!;
            Assert.True(message.Length <= 200, $"a {message.Length}-character error message: {message}");
            Assert.DoesNotContain('\n', message);
            Assert.DoesNotContain(" at ", message);
            Assert.DoesNotContain(".cs", message);
            Assert.DoesNotContain("127.0.0.1", message);
            Assert.DoesNotContain(victimKey, message);
            Assert.DoesNotContain("Exception", message);
        }
    }

    /// <summary>An error body whose message is one short line with no stack trace, silo address or exception name.</summary>
    static bool ShortLine(string body, string silo)
    {
        var message = JsonDocument.Parse(body).RootElement.GetProperty("error").GetProperty("message").GetString()!;
        return message.Length <= 200 && !message.Contains('\n') && !message.Contains(" at ") && !message.Contains("127.0.0.1")
               && !message.Contains(silo) && !message.Contains("Exception");
    }

    static HttpRequestMessage Post(string path, string json, string? conversation)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, System.Text.Encoding.UTF8, "application/json") };
        if (conversation is not null) request.Headers.Add("X-Conversation-Id", conversation);
        return request;
    }

    /// <summary>The data of every event of a streamed reply, until the server ends it.</summary>
    static async Task<List<string>> ReadEvents(HttpResponseMessage response)
    {
        using (response)
        {
            var list = new List<string>();
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            try
            {
                while (await reader.ReadLineAsync() is { } line)
                    if (line.StartsWith("data: ", StringComparison.Ordinal)) list.Add(line["data: ".Length..]);
            }
            catch (IOException) { list.Add("(connection lost)"); }
            return list;
        }
    }

    static string Tail(string log) => log.Length > 4000 ? log[^4000..] : log;

    static string Clip(string s) => s.Length > 300 ? s[..300] + "..." : s;
}
