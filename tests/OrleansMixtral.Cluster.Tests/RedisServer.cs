using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// A throw-away redis-server (Debian's package, which test.sh installs) on a free loopback port, no persistence. Without
/// it the tests that need it are skipped, or fail under CI (<see cref="Requirements"/>).
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

    static readonly Lazy<string?> Executable = new(() => Requirements.FindProgram("redis-server"));

    /// <summary>Skips the test (fails it under CI) when redis-server is not installed.</summary>
    public static void Require() =>
        Requirements.Require(Executable.Value is not null, "redis-server is not installed (Debian: apt-get install redis-server; ./test.sh does)");

    static readonly HashSet<int> GivenPorts = [];

    /// <summary>
    /// A loopback port nobody listens on, never one this process was given before: the system may hand a closed
    /// listener's port out again at once, and a test that asks for a silo port and a gateway port before either is bound
    /// got the same one twice (the silo refuses that).
    /// </summary>
    public static int FreePort()
    {
        lock (GivenPorts)
        {
            while (true)
            {
                using var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                var port = ((IPEndPoint)listener.LocalEndpoint).Port;
                if (GivenPorts.Add(port)) return port;
            }
        }
    }

    public static async Task<RedisServer> StartAsync()
    {
        Require();
        var exe = Executable.Value!;
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
