using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// A throw-away redis-server (Debian's package) on a free loopback port, no persistence. Installs the package with
/// apt-get when it is missing and the tests run as root (CI does); otherwise the tests that need it are skipped.
/// </summary>
public sealed class RedisServer : IAsyncDisposable
{
    readonly Process _process;
    readonly string _directory;

    RedisServer(Process process, int port, string directory)
    {
        _process = process;
        Port = port;
        _directory = directory;
    }

    public int Port { get; }
    public string ConnectionString => $"127.0.0.1:{Port}";

    static readonly Lazy<string?> Executable = new(FindOrInstall);

    /// <summary>Why redis-server is unavailable, or null when it is there.</summary>
    public static string? Unavailable => Executable.Value is null ? "redis-server is not installed and could not be installed with apt-get" : null;

    static string? Find()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/bin").Append("/usr/sbin"))
        {
            var path = Path.Combine(dir, "redis-server");
            if (File.Exists(path)) return path;
        }
        return null;
    }

    static string? FindOrInstall()
    {
        if (Find() is { } found) return found;
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root" || !File.Exists("/usr/bin/apt-get")) return null;
        // The package list may be missing on a fresh machine: install, and if that fails update once and retry.
        if (!Run("apt-get", "install -y -q redis-server")) { Run("apt-get", "update -q"); Run("apt-get", "install -y -q redis-server"); }
        return Find();
    }

    static bool Run(string file, string arguments)
    {
        var psi = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["DEBIAN_FRONTEND"] = "noninteractive";
        using var p = Process.Start(psi)!;
        _ = p.StandardOutput.ReadToEndAsync();
        _ = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(4))) { p.Kill(true); return false; }
        return p.ExitCode == 0;
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public static async Task<RedisServer> StartAsync()
    {
        var exe = Executable.Value ?? throw new InvalidOperationException(Unavailable);
        var port = FreePort();
        var dir = Directory.CreateTempSubdirectory("mixtral-redis-").FullName;
        var psi = new ProcessStartInfo(exe, $"--port {port} --bind 127.0.0.1 --save \"\" --appendonly no --dir {dir} --daemonize no --protected-mode yes")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        var process = Process.Start(psi)!;
        _ = process.StandardOutput.ReadToEndAsync();
        _ = process.StandardError.ReadToEndAsync();
        var server = new RedisServer(process, port, dir);
        var until = DateTime.UtcNow.AddSeconds(15);
        while (!await server.PingAsync())
        {
            if (process.HasExited || DateTime.UtcNow > until)
            {
                await server.DisposeAsync();
                throw new InvalidOperationException($"redis-server did not start on port {port}");
            }
            await Task.Delay(50);
        }
        return server;
    }

    async Task<bool> PingAsync()
    {
        try
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(IPAddress.Loopback, Port);
            var stream = tcp.GetStream();
            await stream.WriteAsync("PING\r\n"u8.ToArray());
            var buffer = new byte[16];
            var n = await stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(1));
            return Encoding.ASCII.GetString(buffer, 0, n).StartsWith("+PONG");
        }
        catch (Exception) { return false; }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(true);
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception) { }
        _process.Dispose();
        try { Directory.Delete(_directory, recursive: true); } catch (IOException) { }
    }
}
