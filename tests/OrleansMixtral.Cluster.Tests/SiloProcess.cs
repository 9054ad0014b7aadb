using System.Diagnostics;
using System.Text;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>A silo host (silos/OrleansMixtral.Silo) running as its own process.</summary>
public sealed class SiloProcess : IAsyncDisposable
{
    readonly Process _process;
    readonly StringBuilder _log = new();
    readonly TaskCompletionSource<string> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    SiloProcess(Process process, int siloPort, int gatewayPort)
    {
        _process = process;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
    }

    public int SiloPort { get; }
    public int GatewayPort { get; }
    /// <summary>The silo's address as its engine grain key (from its start-up line).</summary>
    public string? SiloKey { get; private set; }
    public bool HasExited => _process.HasExited;
    public int ProcessId => _process.Id;
    public string Log { get { lock (_log) return _log.ToString(); } }

    /// <summary>The silo host's program, built in the same configuration as these tests (the test project builds it).</summary>
    public static string Program
    {
        get
        {
            var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)); // bin/<Configuration>/net10.0
            var configuration = output.Parent!.Name;
            var path = Path.Combine(RepoPaths.Root, "silos", "OrleansMixtral.Silo", "bin", configuration, "net10.0", "OrleansMixtral.Silo.dll");
            if (!File.Exists(path)) throw new FileNotFoundException("the silo host is not built", path);
            return path;
        }
    }

    public static SiloProcess Start(IEnumerable<string> arguments) => Start(arguments, RedisServer.FreePort(), RedisServer.FreePort());

    /// <summary>A silo on the given ports (a local cluster's primary silo is the one started with --PrimarySiloPort its own port).</summary>
    public static SiloProcess Start(IEnumerable<string> arguments, int siloPort, int gatewayPort, int? dashboardPort = null)
    {
        var httpPort = dashboardPort ?? RedisServer.FreePort();
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = RepoPaths.Root,
        };
        psi.ArgumentList.Add(Program);
        foreach (var a in arguments.Concat(["--SiloPort", $"{siloPort}", "--GatewayPort", $"{gatewayPort}", "--urls", $"http://127.0.0.1:{httpPort}"]))
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi)!;
        var silo = new SiloProcess(process, siloPort, gatewayPort);
        process.OutputDataReceived += (_, e) => silo.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => silo.OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => silo._ready.TrySetException(new InvalidOperationException("the silo exited:\n" + silo.Log));
        return silo;
    }

    void OnLine(string? line)
    {
        if (line is null) return;
        lock (_log) _log.AppendLine(line);
        const string marker = "OrleansMixtral silo ";
        if (line.StartsWith(marker) && line.Contains(" ready:"))
        {
            SiloKey = line[marker.Length..line.IndexOf(" ready:", StringComparison.Ordinal)];
            _ready.TrySetResult(SiloKey);
        }
    }

    public Task<string> Ready(TimeSpan timeout) => _ready.Task.WaitAsync(timeout);

    /// <summary>Waits for the process to exit by itself and returns its exit code.</summary>
    public async Task<int> Exited(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    /// <summary>Kills the process at once (SIGKILL): no goodbye to the cluster.</summary>
    public void Kill()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.WaitForExit(10_000);
    }

    public async ValueTask DisposeAsync()
    {
        try { Kill(); } catch (Exception) { }
        await Task.CompletedTask;
        _process.Dispose();
    }
}
