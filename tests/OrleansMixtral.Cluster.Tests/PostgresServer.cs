using System.Diagnostics;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// A throw-away PostgreSQL server (Debian's postgresql, which test.sh installs) on a free loopback port with the
/// project's schema, started and stopped by tools/postgres/local-postgres.sh in a temporary directory. Without the
/// server's programs the tests that need it are skipped, or fail under CI (<see cref="Requirements"/>).
/// </summary>
public sealed class PostgresServer : IAsyncDisposable
{
    readonly string _directory;

    PostgresServer(string directory, string connectionString)
    {
        _directory = directory;
        ConnectionString = connectionString;
    }

    /// <summary>The Npgsql connection string of the database (the silos' --Postgres).</summary>
    public string ConnectionString { get; }

    static string Script => Path.Combine(RepoPaths.Tools, "postgres", "local-postgres.sh");

    /// <summary>Skips the test (fails it under CI) when PostgreSQL's server programs are not installed.</summary>
    public static void Require() =>
        Requirements.Require(Directory.Exists("/usr/lib/postgresql") && Directory.GetDirectories("/usr/lib/postgresql").Any(d => File.Exists(Path.Combine(d, "bin", "initdb"))),
            "PostgreSQL's server is not installed (Debian: apt-get install postgresql; ./test.sh does)");

    public static async Task<PostgresServer> StartAsync()
    {
        Require();
        // Not Directory.CreateTempSubdirectory: the script makes it (and gives it to the postgres user when run as root).
        var directory = Path.Combine(Path.GetTempPath(), "mixtral-postgres-" + Guid.NewGuid().ToString("N")[..12]);
        var (code, output) = await RunAsync("start", directory, RedisServer.FreePort().ToString());
        if (code != 0)
        {
            await RunAsync("stop", directory);
            throw new InvalidOperationException($"{Script} start failed ({code}):\n{output}");
        }
        var connectionString = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)[^1];
        return new PostgresServer(directory, connectionString);
    }

    static async Task<(int Code, string Output)> RunAsync(params string[] arguments)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Script);
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        return (process.ExitCode, await stdout + await stderr);
    }

    public async ValueTask DisposeAsync()
    {
        try { await RunAsync("stop", _directory); }
        catch (Exception) { }
    }
}
