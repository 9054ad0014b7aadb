namespace OrleansMixtral.HostLauncher;

/// <summary>One silo of the host: its index, GPU (null on the CPU), ports and the silo host's command line.</summary>
public sealed record SiloPlan(int Index, int? Device, int SiloPort, int GatewayPort, int DashboardPort, IReadOnlyList<string> Arguments)
{
    public string DashboardUrl => $"http://localhost:{DashboardPort}";
}

/// <summary>The OpenAI-compatible gateway of the host: an Orleans client of every silo's gateway.</summary>
public sealed record GatewayPlan(int Port, IReadOnlyList<string> Arguments)
{
    public string Url => $"http://127.0.0.1:{Port}";
}

/// <summary>
/// What the launcher starts, decided from its options and the machine (GPUs seen, cores) and nothing else, so that the
/// layout can be checked without starting anything. The policy of a host, in one place: one silo per GPU, silo i on
/// GPU i with ports base + i, all joining silo 0 (the primary, which keeps the membership table with localhost
/// clustering) and sharing one data directory, hence one SQLite database and one cluster id.
/// </summary>
public sealed record HostPlan(string Backend, string Model, string DataDirectory, IReadOnlyList<SiloPlan> Silos, GatewayPlan? Gateway, string? Note)
{
    /// <summary>The silos' Orleans gateways, as clients name the cluster (<c>mixtral chat --cluster</c>, the gateway's --Cluster).</summary>
    public string ClientGateways => string.Join(',', Silos.Select(s => $"localhost:{s.GatewayPort}"));

    /// <param name="gpus">GPUs this process sees (CUDA_VISIBLE_DEVICES included); 0 without a driver.</param>
    /// <param name="cores">The machine's cores, shared by CPU silos.</param>
    /// <param name="workingDirectory">Against which a relative data directory resolves (the children run there too).</param>
    /// <exception cref="HostUsageException">The options do not fit this machine, or ports collide.</exception>
    public static HostPlan Create(HostLaunchOptions options, int gpus, int cores, string workingDirectory)
    {
        var backend = options.Backend switch
        {
            "cuda" when gpus == 0 => throw new HostUsageException("--backend cuda: this process sees no CUDA device (no driver, or CUDA_VISIBLE_DEVICES lists none)"),
            "auto" => gpus > 0 ? "cuda" : "cpu",
            var b => b,
        };
        string? note = null;
        int silos;
        if (backend == "cuda")
        {
            silos = options.Silos ?? gpus;
            if (silos > gpus)
                throw new HostUsageException($"--silos {silos}: a GPU silo per GPU, and this process sees {gpus} (CUDA_VISIBLE_DEVICES chooses which); use --backend cpu for CPU silos");
        }
        else
        {
            silos = options.Silos ?? 1;
            if (options.Silos is null) note = options.Backend == "cpu" ? "one CPU silo (--silos N for more)" : "no GPU here: one CPU silo (--silos N for more)";
        }

        var ranges = new List<(string Name, int From, int Count)>
        {
            ("--silo-port", options.SiloPort, silos), ("--gateway-port", options.GatewayPort, silos), ("--dashboard-port", options.DashboardPort, silos),
        };
        var synthetic = options.Model.StartsWith("synthetic:", StringComparison.Ordinal);
        var api = synthetic ? null : options.ApiPort;
        if (synthetic && options.ApiPort is not null)
            note = (note is null ? "" : note + "; ") + "no OpenAI gateway: it reads the model directory's tokenizer.json and config.json, which a synthetic model has not (clients use the silos' Orleans gateways)";
        if (api is { } apiPort) ranges.Add(("--api-port", apiPort, 1));
        foreach (var (name, from, count) in ranges)
        {
            if (from + count - 1 > 65535) throw new HostUsageException($"{name} {from}: {count} ports from there pass 65535");
            foreach (var (other, otherFrom, otherCount) in ranges)
                if (other != name && from < otherFrom + otherCount && otherFrom < from + count)
                    throw new HostUsageException($"{name} {from} and {other} {otherFrom}: the ranges of {count} and {otherCount} ports overlap");
        }

        var dataDirectory = Path.GetFullPath(options.DataDirectory, workingDirectory);
        // CPU silos share the machine's cores: each would otherwise start a worker per core and all would thrash.
        var threads = backend == "cpu" && !options.SiloArguments.Any(a => a.Contains("Mixtral:Threads", StringComparison.OrdinalIgnoreCase))
            ? Math.Max(1, cores / silos) : (int?)null;
        var plans = new List<SiloPlan>();
        for (var i = 0; i < silos; i++)
        {
            var (siloPort, gatewayPort, dashboardPort) = (options.SiloPort + i, options.GatewayPort + i, options.DashboardPort + i);
            var args = new List<string>
            {
                "--Model", options.Model, "--Backend", backend, "--DataDirectory", dataDirectory,
                "--SiloPort", $"{siloPort}", "--GatewayPort", $"{gatewayPort}", "--PrimarySiloPort", $"{options.SiloPort}",
                "--urls", $"http://localhost:{dashboardPort}",
            };
            if (backend == "cuda") args.AddRange(["--Mixtral:Device", $"{i}"]);
            if (threads is { } t) args.AddRange(["--Mixtral:Threads", $"{t}"]);
            args.AddRange(options.SiloArguments); // last: the command line's last value of a key wins
            plans.Add(new SiloPlan(i, backend == "cuda" ? i : null, siloPort, gatewayPort, dashboardPort, args));
        }
        var plan = new HostPlan(backend, options.Model, dataDirectory, plans, null, note);
        if (api is { } port)
            plan = plan with
            {
                // the cluster id is the data directory's, which the silos report when ready: the launcher adds --ClusterId then
                Gateway = new GatewayPlan(port, ["--Cluster", plan.ClientGateways, "--Model", options.Model, "--urls", $"http://127.0.0.1:{port}"]),
            };
        return plan;
    }
}
