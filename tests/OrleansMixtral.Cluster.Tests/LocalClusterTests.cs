using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using OrleansMixtral.Client;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// The silo host as a user starts it on one machine: conversations in the SQLite file of its data directory outlive
/// the silo; the cluster id comes from the data directory and clients find it by the gateway port; ports that are
/// taken, and a primary silo of another cluster, are refused in one line before the model loads.
/// </summary>
public sealed class LocalClusterTests(ITestOutputHelper output) : IDisposable
{
    readonly string _data = Path.Combine(Path.GetTempPath(), "mixtral-data-" + Guid.NewGuid().ToString("N")[..8]);

    static readonly string[] Engine = ["--Model", "models/tiny-mixtral", "--Mixtral:Threads", "1", "--Mixtral:KvCacheMegabytes", "16", "--Mixtral:PrefillChunkTokens", "64"];

    string[] Args(string dataDirectory, int primarySiloPort) =>
        [.. Engine, "--DataDirectory", dataDirectory, "--PrimarySiloPort", $"{primarySiloPort}"];

    static async Task<(Microsoft.Extensions.Hosting.IHost Host, MixtralClient Client)> Connect(int gatewayPort)
    {
        // No cluster id: the client finds the one the silo registered for this gateway port.
        var host = await ClusterConnection.ConnectAsync($"localhost:{gatewayPort}", TimeSpan.FromSeconds(30),
            logLevel: Microsoft.Extensions.Logging.LogLevel.Error);
        return (host, host.Services.GetRequiredService<MixtralClient>());
    }

    static string ClusterIdOf(SiloProcess silo)
    {
        var line = silo.Log.Split('\n').Single(l => l.StartsWith("OrleansMixtral silo ", StringComparison.Ordinal) && l.Contains(" ready:"));
        return line[(line.LastIndexOf(", cluster ", StringComparison.Ordinal) + ", cluster ".Length)..].Trim();
    }

    [Fact(Timeout = 180_000)]
    public async Task A_conversation_outlives_its_silo_in_the_data_directory()
    {
        var (siloPort, gatewayPort) = (RedisServer.FreePort(), RedisServer.FreePort());
        string id, clusterId;
        ConversationSnapshot before;
        int[] tokens;
        await using (var first = SiloProcess.Start(Args(_data, siloPort), siloPort, gatewayPort))
        {
            try { await first.Ready(TimeSpan.FromSeconds(60)); }
            catch { output.WriteLine(first.Log); throw; }
            clusterId = ClusterIdOf(first);
            Assert.StartsWith("mixtral-", clusterId);
            Assert.Contains($"storage sqlite ({Path.Combine(_data, MixtralSiloOptions.DatabaseFileName)})", first.Log);
            Assert.Equal(clusterId, (await File.ReadAllTextAsync(Path.Combine(_data, LocalClusters.ClusterIdFile))).Trim());
            Assert.Equal(clusterId, ClusterConnection.ResolveIds($"localhost:{gatewayPort}").ClusterId);

            var (host, client) = await Connect(gatewayPort);
            using (host)
            {
                id = (await client.StartConversationAsync(systemPrompt: "You tell stories.")).ConversationId;
                foreach (var message in new[] { "Tell me about a lighthouse", "And its keeper?" })
                {
                    var turn = await client.SendAndCollectAsync(id, message, ClusterFixture.Short(8));
                    Assert.True(turn.Succeeded, turn.End.Error);
                }
                before = await client.GetHistoryAsync(id);
                tokens = await client.Conversation(id).GetTokens();
                Assert.Equal(2, before.Turns);
            }
            first.Kill(); // SIGKILL: no goodbye, nothing flushed on the way out
        }

        // A new silo on the same data directory (other ports: nothing of the first is reused but the directory).
        var (siloPort2, gatewayPort2) = (RedisServer.FreePort(), RedisServer.FreePort());
        await using var second = SiloProcess.Start(Args(_data, siloPort2), siloPort2, gatewayPort2);
        try { await second.Ready(TimeSpan.FromSeconds(60)); }
        catch { output.WriteLine(second.Log); throw; }
        Assert.Equal(clusterId, ClusterIdOf(second));
        var (host2, client2) = await Connect(gatewayPort2);
        using (host2)
        {
            var after = await client2.GetHistoryAsync(id);
            Assert.Equal(before.Messages, after.Messages);
            Assert.Equal(before.Turns, after.Turns);
            Assert.Equal(tokens, await client2.Conversation(id).GetTokens());
            Assert.Null(await client2.FindConversationAsync("never-" + id)); // and what was never there is not

            // It goes on from the exact stored ids: the next prompt is them plus the new user turn.
            var next = await client2.SendAndCollectAsync(id, "What did he see?", ClusterFixture.Short(8));
            Assert.True(next.Succeeded, next.End.Error);
            Assert.Equal(tokens.Length + ClusterFixture.FollowUpIds("What did he see?").Length, next.End.Usage.PromptTokens);
            Assert.Equal(3, (await client2.GetHistoryAsync(id)).Turns);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task A_taken_port_is_one_line_and_exit_1_before_the_model_loads()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;
        foreach (var (name, silo, gateway, http) in new (string, int?, int?, int?)[]
                 {
                     ("--GatewayPort", null, port, null), ("--SiloPort", port, null, null), ("--urls", null, null, port),
                 })
        {
            var siloPort = silo ?? RedisServer.FreePort();
            var started = Stopwatch.StartNew();
            await using var process = SiloProcess.Start(Args(_data, siloPort), siloPort, gateway ?? RedisServer.FreePort(), http ?? RedisServer.FreePort());
            Assert.Equal(1, await process.Exited(TimeSpan.FromSeconds(30)));
            output.WriteLine($"{name}: {started.Elapsed.TotalSeconds:F1} s: {process.Log.Trim()}");
            var lines = process.Log.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var line = Assert.Single(lines);
            Assert.StartsWith($"error: port {port} (", line);
            Assert.Contains(name, line);
            Assert.Contains("already in use", line);
            Assert.DoesNotContain("Loading the model", process.Log);
        }
        Assert.False(File.Exists(Path.Combine(_data, MixtralSiloOptions.DatabaseFileName)), "nothing was opened");
    }

    [Fact(Timeout = 120_000)]
    public async Task A_silo_of_another_data_directory_does_not_join_and_one_of_the_same_does()
    {
        var (siloPort, gatewayPort) = (RedisServer.FreePort(), RedisServer.FreePort());
        await using var primary = SiloProcess.Start(Args(_data, siloPort), siloPort, gatewayPort);
        try { await primary.Ready(TimeSpan.FromSeconds(60)); }
        catch { output.WriteLine(primary.Log); throw; }

        // Another data directory, told to join this primary: refused at once, naming both clusters.
        var other = _data + "-other";
        try
        {
            var started = Stopwatch.StartNew();
            await using var stranger = SiloProcess.Start(Args(other, siloPort), RedisServer.FreePort(), RedisServer.FreePort());
            Assert.Equal(1, await stranger.Exited(TimeSpan.FromSeconds(30)));
            output.WriteLine($"{started.Elapsed.TotalSeconds:F1} s: {stranger.Log.Trim()}");
            var line = Assert.Single(stranger.Log.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            Assert.Contains($"the silo on port {siloPort} (--PrimarySiloPort) is another cluster's ({ClusterIdOf(primary)}, data directory {_data})", line);
            Assert.DoesNotContain("Loading the model", stranger.Log);
        }
        finally
        {
            try { Directory.Delete(other, recursive: true); } catch (IOException) { }
        }

        // The same directory joins: one cluster of two engines, whose clients know it by either gateway.
        var (siloPort2, gatewayPort2) = (RedisServer.FreePort(), RedisServer.FreePort());
        await using var joiner = SiloProcess.Start(Args(_data, siloPort), siloPort2, gatewayPort2);
        try { await joiner.Ready(TimeSpan.FromSeconds(60)); }
        catch { output.WriteLine(joiner.Log); throw; }
        Assert.Equal(ClusterIdOf(primary), ClusterIdOf(joiner));
        var (host, client) = await Connect(gatewayPort2);
        using (host)
            await ClusterFixture.Eventually(() => client.GetEngineLoadsAsync().Result.Count == 2, "both silos to serve", 30);
    }

    [Fact(Timeout = 30_000)]
    public async Task Clients_use_the_registered_id_of_a_live_local_silo_and_the_default_otherwise()
    {
        var port = RedisServer.FreePort();
        var entry = new LocalClusterEntry("mixtral-test" + port, "svc-test", port, RedisServer.FreePort(), _data, Environment.ProcessId);
        Assert.True(LocalClusters.Register(entry));
        try
        {
            Assert.Equal(("mixtral-test" + port, "svc-test"), ClusterConnection.ResolveIds($"localhost:{port}"));
            Assert.Equal(("mixtral-test" + port, "svc-test"), ClusterConnection.ResolveIds($"127.0.0.1:{port}"));
            Assert.Equal(("given", "mixtral"), ClusterConnection.ResolveIds($"localhost:{port}", "given"));
            Assert.Equal(("mixtral", "mixtral"), ClusterConnection.ResolveIds("redis://127.0.0.1:6379"));
            Assert.Equal(("mixtral", "mixtral"), ClusterConnection.ResolveIds($"localhost:{RedisServer.FreePort()}"));
            Assert.Equal(entry, LocalClusters.FindBySiloPort(entry.SiloPort));

            // A registration whose process is gone counts for nothing.
            using var gone = Process.Start(new ProcessStartInfo("true"))!;
            await gone.WaitForExitAsync();
            Assert.True(LocalClusters.Register(entry with { ProcessId = gone.Id }));
            var file = Path.Combine(LocalClusters.RegistryDirectory, $"gateway-{port}.json");
            Assert.True(File.Exists(file));
            Assert.Equal(("mixtral", "mixtral"), ClusterConnection.ResolveIds($"localhost:{port}"));
            // and the next registration (of any port) removes it.
            var next = RedisServer.FreePort();
            Assert.True(LocalClusters.Register(entry with { GatewayPort = next }));
            LocalClusters.Unregister(next);
            Assert.False(File.Exists(file));
        }
        finally
        {
            LocalClusters.Register(entry);
            LocalClusters.Unregister(port);
        }
        Assert.Null(LocalClusters.Find(port));
    }

    [Fact(Timeout = 30_000)]
    public async Task A_client_started_before_its_silo_waits_for_the_registration_but_not_for_a_silo_that_has_none()
    {
        var port = RedisServer.FreePort();
        var entry = new LocalClusterEntry("mixtral-late" + port, "mixtral", port, RedisServer.FreePort(), _data, Environment.ProcessId);
        try
        {
            var register = Task.Run(async () =>
            {
                await Task.Delay(700);
                LocalClusters.Register(entry);
            });
            var waited = Stopwatch.StartNew();
            Assert.Equal(entry.ClusterId, ClusterConnection.ResolveIds($"localhost:{port}", waitForLocalSilo: TimeSpan.FromSeconds(20)).ClusterId);
            Assert.InRange(waited.Elapsed.TotalSeconds, 0.6, 10);
            await register;
        }
        finally { LocalClusters.Unregister(port); }

        // Something listens there without registering (another user's silo, an older build): the default at once.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var listening = ((IPEndPoint)listener.LocalEndpoint).Port;
        var sw = Stopwatch.StartNew();
        Assert.Equal("mixtral", ClusterConnection.ResolveIds($"localhost:{listening}", waitForLocalSilo: TimeSpan.FromSeconds(20)).ClusterId);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"took {sw.Elapsed}");
        // Nothing at all: the default once the wait is over.
        sw.Restart();
        Assert.Equal("mixtral", ClusterConnection.ResolveIds($"localhost:{RedisServer.FreePort()}", waitForLocalSilo: TimeSpan.FromSeconds(1)).ClusterId);
        Assert.InRange(sw.Elapsed.TotalSeconds, 0.9, 5);
    }

    [Fact(Timeout = 30_000)]
    public void A_data_directory_keeps_its_cluster_id_and_another_gets_another()
    {
        var id = LocalClusters.ClusterIdFor(_data);
        Assert.Matches("^mixtral-[0-9a-f]{12}$", id);
        Assert.Equal(id, LocalClusters.ClusterIdFor(_data));
        // Silos starting together on a new directory agree on one id.
        var fresh = Path.Combine(_data, "fresh");
        var ids = Enumerable.Range(0, 8).AsParallel().Select(_ => LocalClusters.ClusterIdFor(fresh)).Distinct().ToList();
        Assert.Single(ids);
        Assert.NotEqual(id, ids[0]);
        Assert.Equal(ids[0], File.ReadAllText(Path.Combine(fresh, LocalClusters.ClusterIdFile)).Trim());
    }

    public void Dispose()
    {
        try { Directory.Delete(_data, recursive: true); } catch (IOException) { }
    }
}
