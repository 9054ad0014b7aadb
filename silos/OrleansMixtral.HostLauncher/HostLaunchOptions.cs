using System.Globalization;

namespace OrleansMixtral.HostLauncher;

/// <summary>A launcher argument that is missing, malformed or in conflict with the host (exit code 2, with the usage).</summary>
public sealed class HostUsageException(string message) : Exception(message);

/// <summary>
/// What the launcher was asked for. Silo i of the host gets the ports <see cref="SiloPort"/> + i, <see cref="GatewayPort"/>
/// + i and <see cref="DashboardPort"/> + i, and GPU i; every silo joins silo 0 and shares <see cref="DataDirectory"/>
/// (its SQLite conversations and its cluster id). Arguments after <c>--</c> go to every silo as they are.
/// </summary>
public sealed record HostLaunchOptions
{
    public const string Usage =
        "dotnet run -c Release --project silos/OrleansMixtral.HostLauncher -- [--silos N (default: one per visible GPU, else 1)] " +
        "[--backend auto|cpu|cuda] [--model DIR | synthetic:mixtral-8x7b] [--data-directory DIR (default data)] " +
        "[--silo-port 11111] [--gateway-port 30000] [--dashboard-port 5000] [--api-port 8000 | --no-api] " +
        "[--ready-timeout SECONDS (default 900)] [--stop-timeout SECONDS (default 30)] [--status-file FILE.json] [-- SILO SETTINGS...]";

    /// <summary>Silos to start; null: one per GPU this process sees (one CPU silo when there is none).</summary>
    public int? Silos { get; init; }
    public string Backend { get; init; } = "auto";
    public string Model { get; init; } = "models/tiny-mixtral";
    public string DataDirectory { get; init; } = "data";
    public int SiloPort { get; init; } = 11111;
    public int GatewayPort { get; init; } = 30000;
    public int DashboardPort { get; init; } = 5000;
    /// <summary>The OpenAI-compatible gateway's HTTP port; null: no gateway (--no-api).</summary>
    public int? ApiPort { get; init; } = 8000;
    /// <summary>How long the silos (an 8x7B loads in about a minute per GPU) and the gateway may take to be ready.</summary>
    public TimeSpan ReadyTimeout { get; init; } = TimeSpan.FromSeconds(900);
    /// <summary>How long each process may take to stop after SIGTERM before it is killed.</summary>
    public TimeSpan StopTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Where to write the host's processes, ports and addresses as JSON once all are ready (for scripts).</summary>
    public string? StatusFile { get; init; }
    /// <summary>Settings for every silo (after <c>--</c>), e.g. <c>--Mixtral:KvCacheMegabytes 1024</c>; they override the launcher's.</summary>
    public IReadOnlyList<string> SiloArguments { get; init; } = [];

    /// <exception cref="HostUsageException">Anything wrong with the arguments.</exception>
    public static HostLaunchOptions Parse(IReadOnlyList<string> args)
    {
        var options = new HostLaunchOptions();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < args.Count; i++)
        {
            var name = args[i];
            if (name == "--")
            {
                options = options with { SiloArguments = args.Skip(i + 1).ToArray() };
                break;
            }
            if (!seen.Add(name)) throw new HostUsageException($"{name} is given twice");
            if (name == "--no-api")
            {
                options = options with { ApiPort = null };
                continue;
            }
            string Value()
            {
                if (i + 1 >= args.Count || args[i + 1].StartsWith("--", StringComparison.Ordinal)) throw new HostUsageException($"{name} needs a value");
                return args[++i];
            }
            options = name switch
            {
                "--silos" => options with { Silos = Int(name, Value(), 1, 64) },
                "--backend" => options with { Backend = BackendName(Value()) },
                "--model" => options with { Model = NonEmpty(name, Value()) },
                "--data-directory" => options with { DataDirectory = NonEmpty(name, Value()) },
                "--silo-port" => options with { SiloPort = Int(name, Value(), 1, 65535) },
                "--gateway-port" => options with { GatewayPort = Int(name, Value(), 1, 65535) },
                "--dashboard-port" => options with { DashboardPort = Int(name, Value(), 1, 65535) },
                "--api-port" => options with { ApiPort = Int(name, Value(), 1, 65535) },
                "--ready-timeout" => options with { ReadyTimeout = TimeSpan.FromSeconds(Int(name, Value(), 1, 86_400)) },
                "--stop-timeout" => options with { StopTimeout = TimeSpan.FromSeconds(Int(name, Value(), 1, 3_600)) },
                "--status-file" => options with { StatusFile = NonEmpty(name, Value()) },
                _ => throw new HostUsageException(name.StartsWith('-') ? $"unknown option {name} (silo settings go after --)" : $"unexpected argument '{name}'"),
            };
        }
        if (seen.Contains("--no-api") && seen.Contains("--api-port")) throw new HostUsageException("--api-port and --no-api are exclusive");
        return options;
    }

    static string BackendName(string text) => text.ToLowerInvariant() switch
    {
        "auto" or "cpu" or "cuda" => text.ToLowerInvariant(),
        _ => throw new HostUsageException($"--backend must be auto, cpu or cuda, not '{text}'"),
    };

    static int Int(string name, string text, int min, int max) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max ? v
            : throw new HostUsageException($"{name}: '{text}' is not a whole number in [{min}, {max}]");

    static string NonEmpty(string name, string text) =>
        string.IsNullOrWhiteSpace(text) ? throw new HostUsageException($"{name} needs a value") : text;
}
