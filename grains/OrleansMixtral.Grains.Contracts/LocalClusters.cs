using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;

namespace OrleansMixtral.Grains.Contracts;

/// <summary>A silo of a local cluster, as it registers its gateway port for the clients of this machine.</summary>
public sealed record LocalClusterEntry(string ClusterId, string ServiceId, int GatewayPort, int SiloPort, string DataDirectory, int ProcessId);

/// <summary>
/// How local clusters (localhost clustering) keep apart, and how clients find theirs.
/// <list type="bullet">
/// <item>A cluster's id belongs to its data directory: the first silo started on a directory writes a new id to the file
/// <see cref="ClusterIdFile"/> there, and every later silo on that directory reads it. Two clusters on one machine with
/// different data directories have different ids, so a silo of one never joins the other (Orleans refuses connections
/// between different cluster ids), whatever ports they are given.</item>
/// <item>Each silo registers its gateway port with its cluster id in a file of the user's local application data
/// (<see cref="RegistryDirectory"/>, one file per port, removed when the silo stops). A client given a local gateway
/// (<c>localhost:30000</c>) and no cluster id reads the id there; a registration whose process is gone is ignored.</item>
/// </list>
/// </summary>
public static class LocalClusters
{
    /// <summary>The file in a data directory that holds its cluster's id.</summary>
    public const string ClusterIdFile = "cluster-id";
    /// <summary>Environment variable naming another registry directory (tests, several users' sandboxes).</summary>
    public const string RegistryVariable = "ORLEANSMIXTRAL_LOCAL_CLUSTERS";

    /// <summary>Where silos register their gateway ports: <c>$XDG_DATA_HOME/orleansmixtral/local-clusters</c> (~/.local/share on Linux).</summary>
    public static string RegistryDirectory
    {
        get
        {
            if (Environment.GetEnvironmentVariable(RegistryVariable) is { Length: > 0 } configured) return Path.GetFullPath(configured);
            var data = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.DoNotVerify);
            if (string.IsNullOrEmpty(data)) data = Path.Combine(Path.GetTempPath(), "orleansmixtral-" + Environment.UserName);
            return Path.Combine(data, "orleansmixtral", "local-clusters");
        }
    }

    /// <summary>
    /// The cluster id of <paramref name="dataDirectory"/>: read from its <see cref="ClusterIdFile"/>, or (the first time)
    /// a new one (<c>mixtral-</c> and 12 random hex digits) written there. Silos starting together on a new directory
    /// agree: only one creates the file.
    /// </summary>
    /// <exception cref="IOException">The directory cannot be created or the file read or written; or the file holds no usable id.</exception>
    public static string ClusterIdFor(string dataDirectory)
    {
        Directory.CreateDirectory(dataDirectory);
        var path = Path.Combine(dataDirectory, ClusterIdFile);
        for (var attempt = 0; ; attempt++)
        {
            if (File.Exists(path))
            {
                var id = File.ReadAllText(path).Trim();
                if (IsValidId(id)) return id;
                // Another silo may be writing it right now; after that, a broken file is the user's to fix.
                if (attempt < 20) { Thread.Sleep(50); continue; }
                throw new IOException($"{path} does not hold a cluster id (letters, digits, '-', '_' or '.', at most 100): delete it to make a new one, or give --ClusterId");
            }
            var created = "mixtral-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
            try
            {
                using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
                using var writer = new StreamWriter(stream);
                writer.WriteLine(created);
                return created;
            }
            catch (IOException) when (File.Exists(path)) { } // another silo made it first: read theirs
        }
    }

    static bool IsValidId(string id) =>
        id.Length is > 0 and <= 100 && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    static string EntryPath(int gatewayPort) => Path.Combine(RegistryDirectory, $"gateway-{gatewayPort}.json");

    /// <summary>
    /// Registers a silo's gateway port (best effort: false, and nothing else, when the registry cannot be written), and
    /// removes the registrations of processes that are gone (killed silos leave theirs).
    /// </summary>
    public static bool Register(LocalClusterEntry entry)
    {
        var path = EntryPath(entry.GatewayPort);
        try
        {
            Directory.CreateDirectory(RegistryDirectory);
            var temporary = path + "." + Environment.ProcessId + ".tmp";
            File.WriteAllText(temporary, JsonSerializer.Serialize(entry));
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
        try
        {
            foreach (var stale in Directory.EnumerateFiles(RegistryDirectory, "gateway-*.json"))
                if (stale != path && Read(stale) is { } other && !IsRunning(other.ProcessId)) File.Delete(stale);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return true;
    }

    /// <summary>Removes the registration of <paramref name="gatewayPort"/> if it is still this process's.</summary>
    public static void Unregister(int gatewayPort)
    {
        try
        {
            if (Read(EntryPath(gatewayPort)) is { } entry && entry.ProcessId == Environment.ProcessId) File.Delete(EntryPath(gatewayPort));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>The live silo registered on <paramref name="gatewayPort"/> of this machine, or null.</summary>
    public static LocalClusterEntry? Find(int gatewayPort)
    {
        var entry = Read(EntryPath(gatewayPort));
        return entry is not null && IsRunning(entry.ProcessId) ? entry : null;
    }

    /// <summary>The live silo registered with silo port <paramref name="siloPort"/> on this machine, or null.</summary>
    public static LocalClusterEntry? FindBySiloPort(int siloPort)
    {
        try
        {
            if (!Directory.Exists(RegistryDirectory)) return null;
            return Directory.EnumerateFiles(RegistryDirectory, "gateway-*.json")
                .Select(Read)
                .FirstOrDefault(e => e is not null && e.SiloPort == siloPort && IsRunning(e.ProcessId));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    static LocalClusterEntry? Read(string path)
    {
        try { return File.Exists(path) ? JsonSerializer.Deserialize<LocalClusterEntry>(File.ReadAllText(path)) : null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException) { return null; }
    }

    /// <summary>
    /// Whether something listens on <paramref name="address"/>:<paramref name="port"/> (binding it fails with "address in
    /// use"). Needed before starting a silo: Orleans' listeners set SO_REUSEPORT on Linux, so a second silo on a taken port
    /// does not fail but shares it, and the kernel spreads the clients' connections over both.
    /// </summary>
    public static bool IsPortInUse(IPAddress address, int port)
    {
        try
        {
            using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            // SO_REUSEADDR alone, so that connections of an earlier run left in TIME_WAIT do not count. Not .NET's
            // ReuseAddress: on Linux it sets SO_REUSEPORT too, and binding would then succeed beside such a listener.
            if (OperatingSystem.IsLinux()) socket.SetRawSocketOption(1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, BitConverter.GetBytes(1));
            socket.Bind(new IPEndPoint(address, port));
            socket.Listen(1);
            return false;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse) { return true; }
        catch (SocketException) { return false; } // another problem (an address this machine lacks): the real bind reports it
    }

    static bool IsRunning(int processId)
    {
        try
        {
            using var process = Process.GetProcessById(processId);
            return !process.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return false; }
    }
}
