using System.Runtime.InteropServices;
using OrleansMixtral.Cuda;
using OrleansMixtral.HostLauncher;

// One command for a host: a silo per visible GPU (CUDA_VISIBLE_DEVICES chooses which), or --silos N --backend cpu, and
// the OpenAI-compatible gateway, as one cluster on one data directory. See docs/CLUSTER.md, "Multi-GPU host".
//   dotnet run -c Release --project silos/OrleansMixtral.HostLauncher -- [--silos N] [--backend auto|cpu|cuda] [--model DIR] [-- SILO SETTINGS]
HostLaunchOptions options;
HostPlan plan;
string siloProgram;
string? gatewayProgram = null;
try
{
    options = HostLaunchOptions.Parse(args);
    // the CPU backend asks nothing of CUDA (no driver is loaded)
    var gpus = options.Backend == "cpu" ? 0 : CudaDevice.Count();
    plan = HostPlan.Create(options, gpus, Environment.ProcessorCount, Environment.CurrentDirectory);
    siloProgram = Programs.Find("OrleansMixtral.Silo");
    if (plan.Gateway is not null) gatewayProgram = Programs.Find("OrleansMixtral.Gateway");
}
catch (HostUsageException e)
{
    Console.Error.WriteLine("error: " + e.Message);
    Console.Error.WriteLine("usage: " + HostLaunchOptions.Usage);
    return 2;
}
catch (FileNotFoundException e)
{
    Console.Error.WriteLine("error: " + e.Message);
    return 1;
}

var launcher = new HostRunner(plan, options, Programs.Dotnet, siloProgram, gatewayProgram, Environment.CurrentDirectory, Console.Out);
using var stop = new CancellationTokenSource();
var signals = 0;
void OnSignal(PosixSignalContext context)
{
    context.Cancel = true; // the launcher stops its children before it exits
    if (Interlocked.Increment(ref signals) == 1) stop.Cancel();
    else launcher.KillAll(); // a second Ctrl+C: no more waiting
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
return await launcher.RunAsync(stop.Token);

/// <summary>Where the programs the launcher starts are, and what runs them.</summary>
static class Programs
{
    /// <summary>The dotnet host running this program (children run on the same runtime), else the one on PATH.</summary>
    public static string Dotnet =>
        Environment.ProcessPath is { } path && Path.GetFileNameWithoutExtension(path) == "dotnet" ? path : "dotnet";

    /// <summary>
    /// NAME.dll beside this program's folder (a publish of each program in its own folder, as tools/gpu/pack.sh makes),
    /// else in the repository's build output of the same configuration as this program.
    /// </summary>
    /// <exception cref="FileNotFoundException">Neither exists.</exception>
    public static string Find(string name)
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var candidates = new List<string> { Path.Combine(here.Parent!.FullName, name, name + ".dll") };
        // bin/<Configuration>/<framework>/ of silos/OrleansMixtral.HostLauncher
        var (framework, configuration) = (here.Name, here.Parent!.Name);
        for (var dir = here; dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "OrleansMixtral.sln")))
            {
                // src/ holds the gateway (an Orleans client), silos/ the silo
                foreach (var folder in new[] { "src", "silos" })
                    candidates.Add(Path.Combine(dir.FullName, folder, name, "bin", configuration, framework, name + ".dll"));
                break;
            }
        return candidates.FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException($"{name}.dll not found (looked for {string.Join(", ", candidates)}): build it, or publish it beside this program", name);
    }
}
