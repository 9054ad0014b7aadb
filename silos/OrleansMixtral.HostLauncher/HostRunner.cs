using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace OrleansMixtral.HostLauncher;

/// <summary>The silos and the gateway of a host once all are ready (the launcher's --status-file).</summary>
public sealed record HostStatus(string ClusterId, string DataDirectory, string Backend, string Model, string ClientGateways,
    IReadOnlyList<SiloStatus> Silos, GatewayStatus? Gateway);

/// <param name="Device">Where its engine runs, as the silo says: "GPU 1 (NVIDIA H200)" or "the CPU".</param>
public sealed record SiloStatus(int Index, int ProcessId, string SiloAddress, string Device, int SiloPort, int GatewayPort, string Dashboard, string Engines);

public sealed record GatewayStatus(int ProcessId, string Url);

/// <summary>
/// Runs a <see cref="HostPlan"/>: silo 0 first and, as soon as its silo port listens (before its model has loaded, so
/// the loads overlap), the others, which join it; once every silo says it is ready, the gateway; then it prints the
/// addresses and waits. A silo that dies meanwhile is reported and the others go on (the cluster routes around it). On
/// stop, the gateway, then the joined silos, then silo 0 (which keeps the membership table the others leave through)
/// get SIGTERM, and whatever has not stopped within the stop timeout is killed: nothing outlives the launcher.
/// </summary>
public sealed partial class HostRunner(HostPlan plan, HostLaunchOptions options, string dotnet, string siloProgram, string? gatewayProgram,
    string workingDirectory, TextWriter output)
{
    sealed class Silo(SiloPlan plan, ChildProcess process)
    {
        public SiloPlan Plan { get; } = plan;
        public ChildProcess Process { get; } = process;
        public TaskCompletionSource<Match> Ready { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    readonly List<Silo> _silos = [];
    ChildProcess? _gateway;

    /// <summary>Starts the host, serves until <paramref name="stopping"/> (or until no silo is left), stops it. 0: stopped as asked; 1: it failed.</summary>
    public async Task<int> RunAsync(CancellationToken stopping)
    {
        try
        {
            if (plan.Note is { } note) Say("note: " + note);
            Say($"starting {plan.Silos.Count} {(plan.Backend == "cuda" ? "GPU" : "CPU")} silo{(plan.Silos.Count == 1 ? "" : "s")} with {plan.Model}, data directory {plan.DataDirectory}");
            var status = await StartAsync(stopping);
            if (status is null) return stopping.IsCancellationRequested ? 0 : 1;
            if (options.StatusFile is { } file) // before the ready line: whoever waits for the line may read the file
            {
                var path = Path.GetFullPath(file, workingDirectory);
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                await File.WriteAllTextAsync(path, JsonSerializer.Serialize(status, StatusJson), CancellationToken.None);
            }
            PrintReady(status);
            return await ServeAsync(stopping);
        }
        finally
        {
            await StopAllAsync();
        }
    }

    static readonly JsonSerializerOptions StatusJson = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true };

    /// <summary>Every silo ready and the gateway answering; null (with the reason said) when one failed, or a stop came first.</summary>
    async Task<HostStatus?> StartAsync(CancellationToken stopping)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(options.ReadyTimeout);
        var primary = StartSilo(plan.Silos[0]);
        // The others need silo 0's silo port to join; it opens before the model loads, so their loads overlap with its.
        while (!PortListens(primary.Plan.SiloPort) && !primary.Ready.Task.IsCompleted && !primary.Process.HasExited)
        {
            try { await Task.Delay(200, timeout.Token); }
            catch (OperationCanceledException) { return Failed(stopping, "silo 0 did not open its silo port in time"); }
        }
        if (primary.Process.HasExited) return ExitedEarly(primary);
        foreach (var p in plan.Silos.Skip(1)) StartSilo(p);

        foreach (var silo in _silos)
        {
            var exited = silo.Process.Exited;
            try { await Task.WhenAny(silo.Ready.Task, exited).WaitAsync(timeout.Token); }
            catch (OperationCanceledException) { return Failed(stopping, $"silo {silo.Plan.Index} was not ready within {options.ReadyTimeout.TotalSeconds:F0} s"); }
            if (!silo.Ready.Task.IsCompleted) return ExitedEarly(silo);
        }
        // a silo may have died after saying it was ready, while the others loaded
        if (_silos.FirstOrDefault(s => s.Process.HasExited) is { } dead) return ExitedEarly(dead);

        var clusterId = primary.Ready.Task.Result.Groups["cluster"].Value;
        GatewayStatus? gateway = null;
        if (plan.Gateway is { } g)
        {
            _gateway = ChildProcess.Start("gateway", dotnet, gatewayProgram!, [.. g.Arguments, "--ClusterId", clusterId], workingDirectory, output);
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
            while (true)
            {
                if (_gateway.HasExited)
                {
                    await _gateway.Exited.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { });
                    return Failed(stopping, $"the gateway exited with code {_gateway.ExitCode} before it answered; its last lines:{Environment.NewLine}{_gateway.Tail}");
                }
                try
                {
                    using var health = await http.GetAsync(g.Url + "/health", timeout.Token);
                    if (health.IsSuccessStatusCode) break;
                }
                catch (HttpRequestException) { }
                catch (TaskCanceledException) when (!timeout.IsCancellationRequested) { } // one slow answer
                catch (OperationCanceledException) { return Failed(stopping, $"the gateway did not answer {g.Url}/health in time"); }
                try { await Task.Delay(250, timeout.Token); }
                catch (OperationCanceledException) { return Failed(stopping, $"the gateway did not answer {g.Url}/health in time"); }
            }
            gateway = new GatewayStatus(_gateway.Id, g.Url);
        }

        var silos = _silos.Select(s =>
        {
            var ready = s.Ready.Task.Result;
            return new SiloStatus(s.Plan.Index, s.Process.Id, ready.Groups["silo"].Value, ready.Groups["device"].Value, s.Plan.SiloPort,
                s.Plan.GatewayPort, s.Plan.DashboardUrl + "/dashboard/", s.Plan.DashboardUrl + "/engines");
        }).ToList();
        return new HostStatus(clusterId, plan.DataDirectory, plan.Backend, plan.Model, plan.ClientGateways, silos, gateway);
    }

    Silo StartSilo(SiloPlan p)
    {
        Silo? silo = null;
        var process = ChildProcess.Start($"silo {p.Index}", dotnet, siloProgram, p.Arguments, workingDirectory, output, line =>
        {
            if (ReadyLine().Match(line) is { Success: true } m) silo!.Ready.TrySetResult(m);
        });
        silo = new Silo(p, process);
        _silos.Add(silo);
        return silo;
    }

    HostStatus? ExitedEarly(Silo silo)
    {
        silo.Process.Exited.Wait(TimeSpan.FromSeconds(5)); // its last lines
        var code = silo.Process.HasExited ? silo.Process.ExitCode : -1;
        Say($"error: silo {silo.Plan.Index} exited with code {code} before it was ready; its last lines:{Environment.NewLine}{silo.Process.Tail}");
        return null;
    }

    HostStatus? Failed(CancellationToken stopping, string why)
    {
        if (!stopping.IsCancellationRequested) Say("error: " + why);
        return null;
    }

    void PrintReady(HostStatus status)
    {
        var lines = new List<string>
        {
            $"OrleansMixtral host ready: {status.Silos.Count} silo{(status.Silos.Count == 1 ? "" : "s")} ({status.Backend}), cluster {status.ClusterId}, data directory {status.DataDirectory}",
        };
        foreach (var s in status.Silos)
            lines.Add($"  silo {s.Index}: {s.Device}, pid {s.ProcessId}, silo port {s.SiloPort}, gateway localhost:{s.GatewayPort}, dashboard {s.Dashboard}, engines {s.Engines}");
        if (status.Gateway is { } g) lines.Add($"  OpenAI API: {g.Url}/v1 (health {g.Url}/health, metrics {g.Url}/metrics), pid {g.ProcessId}");
        lines.Add($"  chat: mixtral chat --cluster {status.ClientGateways}");
        lines.Add("  Ctrl+C or SIGTERM stops them all");
        lock (output)
        {
            foreach (var line in lines) output.WriteLine(line);
            output.Flush();
        }
    }

    /// <summary>Until asked to stop; a silo (or the gateway) that dies is reported and the rest go on. 1 when no silo is left.</summary>
    async Task<int> ServeAsync(CancellationToken stopping)
    {
        var live = _silos.Select(s => (Name: s.Process.Name, s.Process)).ToList();
        if (_gateway is not null) live.Add(("gateway", _gateway));
        var stopped = Task.Delay(Timeout.Infinite, stopping).ContinueWith(_ => { });
        while (true)
        {
            var done = await Task.WhenAny(live.Select(l => l.Process.Exited).Append(stopped));
            if (done == stopped) return 0;
            foreach (var gone in live.Where(l => l.Process.Exited.IsCompleted).ToList())
            {
                live.Remove(gone);
                var code = gone.Process.ExitCode;
                var how = code > 128 ? $"code {code} (signal {code - 128}{(code == 137 ? ", SIGKILL" : "")})" : $"code {code}";
                Say($"{gone.Name} (pid {gone.Process.Id}) exited with {how}{(gone.Name == "gateway" ? "" : "; the cluster goes on with the other silos")}");
            }
            if (!live.Any(l => l.Name.StartsWith("silo", StringComparison.Ordinal)))
            {
                Say("error: no silo is left");
                return 1;
            }
        }
    }

    async Task StopAllAsync()
    {
        var running = _silos.Where(s => !s.Process.HasExited).ToList();
        if (running.Count == 0 && _gateway is not { HasExited: false }) return;
        Say("stopping");
        if (_gateway is not null) await _gateway.StopAsync(options.StopTimeout);
        // joined silos first, together; silo 0 last: they leave the cluster through the membership table it keeps
        await Task.WhenAll(running.Where(s => s.Plan.Index > 0).Select(s => s.Process.StopAsync(options.StopTimeout)));
        foreach (var s in running.Where(s => s.Plan.Index == 0)) await s.Process.StopAsync(options.StopTimeout);
        foreach (var s in _silos) s.Process.Dispose();
        _gateway?.Dispose();
        Say("stopped");
    }

    /// <summary>A second Ctrl+C: kill everything now.</summary>
    public void KillAll()
    {
        _gateway?.KillNow();
        foreach (var s in _silos) s.Process.KillNow();
    }

    void Say(string line)
    {
        lock (output)
        {
            output.WriteLine(line);
            output.Flush();
        }
    }

    static bool PortListens(int port)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            return socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port)).Wait(TimeSpan.FromMilliseconds(500)) && socket.Connected;
        }
        catch (Exception e) when (e is AggregateException or SocketException) { return false; }
    }

    /// <summary>The silo host's ready line: "OrleansMixtral silo ADDRESS ready: model M (BACKEND) on DEVICE, KV cache …, cluster ID".</summary>
    [GeneratedRegex(@"^OrleansMixtral silo (?<silo>\S+) ready: .*\) on (?<device>GPU \d+ \(.*?\)|the CPU), KV cache .*, cluster (?<cluster>\S+)$")]
    private static partial Regex ReadyLine();
}
