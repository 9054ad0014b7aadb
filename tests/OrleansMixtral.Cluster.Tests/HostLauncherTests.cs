using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using OrleansMixtral.Client;
using OrleansMixtral.HostLauncher;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// The host launcher (silos/OrleansMixtral.HostLauncher): its layout (one silo per GPU, ports from the silo's index, one
/// data directory) decided without starting anything; and the launcher itself with two CPU silos and the gateway: one
/// cluster, a conversation through the OpenAI endpoints, and SIGTERM leaving no process behind.
/// </summary>
public sealed class HostLauncherTests(ITestOutputHelper output) : IDisposable
{
    readonly string _work = Directory.CreateTempSubdirectory("mixtral-host-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_work, recursive: true); } catch (IOException) { }
    }

    static HostPlan Plan(string args, int gpus, int cores = 16) =>
        HostPlan.Create(HostLaunchOptions.Parse(args.Split(' ', StringSplitOptions.RemoveEmptyEntries)), gpus, cores, "/srv");

    [Fact]
    public void A_gpu_host_gets_a_silo_per_gpu_with_ports_from_its_index_joining_silo_0()
    {
        var plan = Plan("--model /models/m", gpus: 2);
        Assert.Equal("cuda", plan.Backend);
        Assert.Equal(2, plan.Silos.Count);
        foreach (var s in plan.Silos)
        {
            Assert.Equal(s.Index, s.Device);
            Assert.Equal((11111 + s.Index, 30000 + s.Index, 5000 + s.Index), (s.SiloPort, s.GatewayPort, s.DashboardPort));
            string[] expected =
            [
                "--Model", "/models/m", "--Backend", "cuda", "--DataDirectory", "/srv/data", "--SiloPort", $"{11111 + s.Index}",
                "--GatewayPort", $"{30000 + s.Index}", "--PrimarySiloPort", "11111", "--urls", $"http://localhost:{5000 + s.Index}",
                "--Mixtral:Device", $"{s.Index}",
            ];
            Assert.Equal(expected, s.Arguments);
        }
        Assert.Equal("localhost:30000,localhost:30001", plan.ClientGateways);
        Assert.Equal(["--Cluster", "localhost:30000,localhost:30001", "--Model", "/models/m", "--urls", "http://127.0.0.1:8000"], plan.Gateway!.Arguments);

        // fewer silos than GPUs: the first ones; CUDA_VISIBLE_DEVICES chooses which GPUs those are
        Assert.Equal([0], Plan("--silos 1", gpus: 2).Silos.Select(s => s.Device!.Value));
        Assert.Equal("--silos 3: a GPU silo per GPU, and this process sees 2 (CUDA_VISIBLE_DEVICES chooses which); use --backend cpu for CPU silos",
            Assert.Throws<HostUsageException>(() => Plan("--silos 3", gpus: 2)).Message);
    }

    [Fact]
    public void Cpu_silos_share_the_cores_and_settings_after_the_double_dash_come_last()
    {
        var plan = Plan("--silos 2 --backend cpu --silo-port 21000 --gateway-port 22000 --dashboard-port 23000 --api-port 24000 -- --Mixtral:KvCacheMegabytes 16", gpus: 2, cores: 8);
        Assert.Equal("cpu", plan.Backend);
        Assert.All(plan.Silos, s => Assert.Null(s.Device));
        Assert.All(plan.Silos, s => Assert.Equal(["--Mixtral:Threads", "4", "--Mixtral:KvCacheMegabytes", "16"], s.Arguments.TakeLast(4)));
        Assert.Equal([21001, 22001, 23001], new[] { plan.Silos[1].SiloPort, plan.Silos[1].GatewayPort, plan.Silos[1].DashboardPort });
        Assert.Equal("http://127.0.0.1:24000", plan.Gateway!.Url);
        // threads given: left alone
        Assert.DoesNotContain("4", Plan("--silos 2 --backend cpu -- --Mixtral:Threads 1", gpus: 0, cores: 8).Silos[0].Arguments);
        // no GPU, nothing asked: one CPU silo, said in a note
        var one = Plan("", gpus: 0);
        Assert.Equal(("cpu", 1), (one.Backend, one.Silos.Count));
        Assert.Equal("no GPU here: one CPU silo (--silos N for more)", one.Note);
    }

    [Theory]
    [InlineData("--backend cuda", 0, "--backend cuda: this process sees no CUDA device (no driver, or CUDA_VISIBLE_DEVICES lists none)")]
    [InlineData("--silos 0", 0, "--silos: '0' is not a whole number in [1, 64]")]
    [InlineData("--backend gpu", 0, "--backend must be auto, cpu or cuda, not 'gpu'")]
    [InlineData("--silos 4 --backend cpu --silo-port 30002", 0, "--silo-port 30002 and --gateway-port 30000: the ranges of 4 and 4 ports overlap")]
    [InlineData("--api-port 5001 --silos 2 --backend cpu", 0, "--dashboard-port 5000 and --api-port 5001: the ranges of 2 and 1 ports overlap")]
    [InlineData("--no-api --api-port 9000", 0, "--api-port and --no-api are exclusive")]
    [InlineData("--silos 2 --silos 3", 0, "--silos is given twice")]
    [InlineData("--model", 0, "--model needs a value")]
    [InlineData("--Silos 2", 0, "unknown option --Silos (silo settings go after --)")]
    public void Settings_that_do_not_fit_are_one_line(string args, int gpus, string expected) =>
        Assert.Equal(expected, Assert.Throws<HostUsageException>(() => Plan(args, gpus)).Message);

    [Fact]
    public void A_synthetic_model_gets_no_openai_gateway_and_says_why()
    {
        var plan = Plan("--model synthetic:mixtral-8x7b", gpus: 2);
        Assert.Null(plan.Gateway);
        Assert.Contains("no OpenAI gateway", plan.Note);
        Assert.Null(Plan("--no-api", gpus: 1).Gateway);
    }

    static string Program => RepoPaths.BuiltProgram("OrleansMixtral.HostLauncher");

    /// <summary>A first port of <paramref name="count"/> free loopback ports in a row.</summary>
    static int FreePorts(int count)
    {
        for (var attempt = 0; ; attempt++)
        {
            var first = Random.Shared.Next(20_000, 60_000);
            var listeners = new List<TcpListener>();
            try
            {
                for (var p = first; p < first + count; p++)
                {
                    var l = new TcpListener(IPAddress.Loopback, p);
                    l.Start();
                    listeners.Add(l);
                }
                return first;
            }
            catch (SocketException) when (attempt < 50) { }
            finally { foreach (var l in listeners) l.Stop(); }
        }
    }

    static bool Alive(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
    }

    /// <summary>A launcher process and what it said; disposing it kills whatever is left of it and its children.</summary>
    sealed class Launched(Process process, StringBuilder log, ITestOutputHelper output) : IDisposable
    {
        public Process Process { get; } = process;
        public List<int> Children { get; } = [];
        public JsonElement Status { get; set; }
        public string Log { get { lock (log) return log.ToString(); } }

        public async Task<int> TerminateAsync()
        {
            using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", $"{Process.Id}"])) await kill.WaitForExitAsync();
            await Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(90));
            return Process.ExitCode;
        }

        public void Dispose()
        {
            output.WriteLine(Log);
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            foreach (var pid in Children.Where(Alive))
                try { using var p = System.Diagnostics.Process.GetProcessById(pid); p.Kill(); } catch (ArgumentException) { }
            Process.Dispose();
        }
    }

    /// <summary>Two CPU silos (and the gateway unless --no-api is given) on free ports, once the launcher says they are ready.</summary>
    async Task<Launched> LaunchAsync(int silo, int gateway, int dashboard, params string[] more)
    {
        var status = Path.Combine(_work, "status.json");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepoPaths.Root };
        foreach (var a in new[]
                 {
                     Program, "--silos", "2", "--backend", "cpu", "--model", "models/tiny-mixtral", "--data-directory", Path.Combine(_work, "data"),
                     "--silo-port", $"{silo}", "--gateway-port", $"{gateway}", "--dashboard-port", $"{dashboard}", "--status-file", status,
                 }.Concat(more).Concat(["--", "--Mixtral:KvCacheMegabytes", "16", "--Mixtral:PrefillChunkTokens", "64"]))
            psi.ArgumentList.Add(a);
        var log = new StringBuilder();
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var launched = new Launched(System.Diagnostics.Process.Start(psi)!, log, output);
        void OnLine(string? line)
        {
            if (line is null) return;
            lock (log) log.AppendLine(line);
            if (line.StartsWith("OrleansMixtral host ready: ", StringComparison.Ordinal)) ready.TrySetResult();
        }
        launched.Process.OutputDataReceived += (_, e) => OnLine(e.Data);
        launched.Process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        launched.Process.BeginOutputReadLine();
        launched.Process.BeginErrorReadLine();
        await Task.WhenAny(ready.Task, launched.Process.WaitForExitAsync()).WaitAsync(TimeSpan.FromSeconds(150));
        Assert.True(ready.Task.IsCompleted, "the launcher exited before it was ready:\n" + launched.Log);
        using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(status));
        launched.Status = doc.RootElement.Clone();
        launched.Children.AddRange(launched.Status.GetProperty("silos").EnumerateArray().Select(s => s.GetProperty("processId").GetInt32()));
        if (launched.Status.GetProperty("gateway").ValueKind == JsonValueKind.Object)
            launched.Children.Add(launched.Status.GetProperty("gateway").GetProperty("processId").GetInt32());
        return launched;
    }

    [Fact(Timeout = 240_000)]
    public async Task Two_cpu_silos_and_the_gateway_serve_as_one_cluster_and_sigterm_stops_every_process()
    {
        var (silo, gateway, dashboard, api) = (FreePorts(2), FreePorts(2), FreePorts(2), FreePorts(1));
        using var host = await LaunchAsync(silo, gateway, dashboard, "--api-port", $"{api}");
        var root = host.Status;
        var silos = root.GetProperty("silos").EnumerateArray().ToList();
        Assert.Equal(2, silos.Count);
        Assert.Equal(3, host.Children.Count);
        Assert.All(host.Children, pid => Assert.True(Alive(pid)));
        Assert.All(silos, s => Assert.Equal("the CPU", s.GetProperty("device").GetString()));
        var clusterId = root.GetProperty("clusterId").GetString()!;
        Assert.Equal(clusterId, (await File.ReadAllTextAsync(Path.Combine(_work, "data", "cluster-id"))).Trim());
        Assert.Equal($"localhost:{gateway},localhost:{gateway + 1}", root.GetProperty("clientGateways").GetString());

        // Both silos are members of one cluster: either's engines listing has both engines, on the CPU.
        var addresses = silos.Select(s => s.GetProperty("siloAddress").GetString()).Order().ToArray();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        var engines = await http.GetFromJsonAsync<JsonElement>($"http://localhost:{dashboard + 1}/engines");
        Assert.Equal(addresses, engines.EnumerateArray().Select(e => e.GetProperty("silo").GetString()).Order());
        Assert.All(engines.EnumerateArray(), e => Assert.Equal(("cpu", JsonValueKind.Null), (e.GetProperty("deviceName").GetString(), e.GetProperty("deviceIndex").ValueKind)));
        var (clientHost, client) = await ConnectAsync($"localhost:{gateway},localhost:{gateway + 1}", clusterId);
        using (clientHost) Assert.Equal(addresses, (await client.GetEngineLoadsAsync()).Select(l => l.Silo).Order());

        // A conversation through the OpenAI endpoints: two turns, the second on top of the first.
        var baseUrl = $"http://127.0.0.1:{api}";
        var health = await http.GetFromJsonAsync<JsonElement>(baseUrl + "/health");
        Assert.Equal(2, health.GetProperty("engines").GetArrayLength());
        Assert.All(health.GetProperty("engines").EnumerateArray(), e => Assert.Equal("cpu", e.GetProperty("device").GetString()));
        string? conversation = "new";
        foreach (var message in new[] { "Tell me about a lighthouse", "And its keeper?" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, baseUrl + "/v1/chat/completions")
            {
                Content = JsonContent.Create(new { model = "tiny-mixtral", messages = new[] { new { role = "user", content = message } }, max_tokens = 8 }),
            };
            request.Headers.Add("X-Conversation-Id", conversation);
            using var response = await http.SendAsync(request);
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
            conversation = response.Headers.GetValues("X-Conversation-Id").Single();
        }
        var stored = await http.GetFromJsonAsync<JsonElement>($"{baseUrl}/v1/conversations/{conversation}");
        Assert.Equal(2, stored.GetProperty("turns").GetInt32());
        output.WriteLine(stored.ToString());

        // SIGTERM: the launcher stops the gateway and the silos, and exits 0 with nothing left behind.
        Assert.Equal(0, await host.TerminateAsync());
        Assert.DoesNotContain(host.Children, Alive);
        Assert.EndsWith("stopped", host.Log.TrimEnd());
    }

    static string ClusterBench => RepoPaths.BuiltProgram("OrleansMixtral.ClusterBench");

    [Fact(Timeout = 240_000)]
    public async Task Conversations_through_the_launched_host_survive_a_silo_killed_mid_load()
    {
        // What tools/gpu/device-multi-gpu.sh does in its step (c), small: multi-turn conversations from ClusterBench's
        // conversation mode, silo 1 killed (SIGKILL) in the middle; the launcher goes on with silo 0 and still stops clean.
        // 14 s: the cluster takes some seconds to declare the silo dead, and the turns after that must fit in the run.
        using var host = await LaunchAsync(FreePorts(2), FreePorts(2), FreePorts(2), "--no-api");
        var silo1 = host.Status.GetProperty("silos")[1];
        var json = Path.Combine(_work, "c.json");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepoPaths.Root };
        foreach (var a in new[]
                 {
                     ClusterBench, "--cluster", host.Status.GetProperty("clientGateways").GetString()!, "--cluster-id", host.Status.GetProperty("clusterId").GetString()!,
                     "--concurrency", "3", "--turns", "3", "--duration", "14", "--prompt-tokens", "32", "--output-tokens", "6", "--follow-up-words", "4",
                     "--warmup", "2", "--kill-pid", $"{silo1.GetProperty("processId").GetInt32()}", "--kill-at", "2", "--json", json, "--label", "kill test",
                 })
            psi.ArgumentList.Add(a);
        using var bench = System.Diagnostics.Process.Start(psi)!;
        Task<string> stdout = bench.StandardOutput.ReadToEndAsync(), stderr = bench.StandardError.ReadToEndAsync();
        await bench.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(3));
        output.WriteLine(await stdout);
        output.WriteLine(await stderr);
        Assert.Equal(0, bench.ExitCode);

        using var report = JsonDocument.Parse(await File.ReadAllTextAsync(json));
        var r = report.RootElement;
        Assert.Equal(2, r.GetProperty("enginesBefore").GetArrayLength());
        var histories = r.GetProperty("histories");
        Assert.True(histories.GetProperty("conversations").GetInt32() > 0);
        Assert.Equal(histories.GetProperty("conversations").GetInt32(), histories.GetProperty("intact").GetInt32());
        var fault = r.GetProperty("fault");
        var gone = silo1.GetProperty("siloAddress").GetString();
        Assert.Equal([gone], fault.GetProperty("silosGone").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(0, fault.GetProperty("unanswered").GetInt32());
        var after = fault.GetProperty("turnsAfterKill").EnumerateObject().ToList();
        Assert.NotEmpty(after);
        Assert.DoesNotContain(after, p => p.Name == gone); // the turns sent after the kill ran on silo 0
        Assert.True(r.GetProperty("affinity").GetProperty("followUps").GetInt32() > 0);
        Assert.Contains($"silo 1 (pid {silo1.GetProperty("processId").GetInt32()}) exited with code 137", host.Log);

        Assert.Equal(0, await host.TerminateAsync());
        Assert.DoesNotContain(host.Children, Alive);
    }

    static async Task<(Microsoft.Extensions.Hosting.IHost Host, MixtralClient Client)> ConnectAsync(string gateways, string clusterId)
    {
        var host = await ClusterConnection.ConnectAsync(gateways, TimeSpan.FromSeconds(30), clusterId: clusterId, logLevel: Microsoft.Extensions.Logging.LogLevel.Error);
        return (host, host.Services.GetRequiredService<MixtralClient>());
    }
}
