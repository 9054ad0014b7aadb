using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace OrleansMixtral.LoadBench;

/// <summary>How the benches write JSON: camelCase, indented, '+' and non-ASCII kept as they are (files, never HTML).</summary>
public static class LoadJson
{
    public static readonly JsonSerializerOptions Indented = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        WriteIndented = true,
    };

    public static async Task WriteAsync<T>(string path, T report, CancellationToken cancellationToken = default)
    {
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir) Directory.CreateDirectory(dir);
        await File.WriteAllTextAsync(path, JsonSerializer.Serialize(report, Indented), cancellationToken).ConfigureAwait(false);
    }

    public static string Now() => DateTimeOffset.UtcNow.ToString("o", CultureInfo.InvariantCulture);
}

/// <summary>The machine a bench ran on.</summary>
public sealed record MachineInfo(int Cores, string Os, string Architecture, string Runtime, string? Cpu, long MemoryBytes, string Host)
{
    public static MachineInfo Current() => new(
        Environment.ProcessorCount,
        RuntimeInformation.OSDescription,
        RuntimeInformation.ProcessArchitecture.ToString(),
        RuntimeInformation.FrameworkDescription,
        CpuModel(),
        GC.GetGCMemoryInfo().TotalAvailableMemoryBytes,
        Environment.MachineName);

    static string? CpuModel()
    {
        try
        {
            if (!File.Exists("/proc/cpuinfo")) return null;
            foreach (string line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':') is > 0 and var i) return line[(i + 1)..].Trim();
        }
        catch (IOException) { }
        return null;
    }
}
