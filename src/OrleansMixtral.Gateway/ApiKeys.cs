using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace OrleansMixtral.Gateway;

/// <summary>
/// Who a request is. Every API key is its own tenant; <see cref="ConversationKey"/> (derived from the key, never the
/// key itself) signs the tenant's conversation ids, so another key can never name them.
/// </summary>
public sealed class Tenant(string name, byte[] conversationKey)
{
    /// <summary>The tenant's name: configured with the key, else "key-" and 8 hex digits of the key's SHA-256.</summary>
    public string Name { get; } = name;
    internal byte[] ConversationKey { get; } = conversationKey;
    public override string ToString() => Name;
}

/// <summary>
/// The API keys, from configuration (<c>Gateway:ApiKeys</c>: strings "KEY", or objects with Key and Tenant) and from a
/// file (<see cref="GatewayOptions.ApiKeysFile"/>). Only the keys' SHA-256 hashes are kept; keys are never logged.
/// With no keys at all the gateway serves loopback clients only, as the single tenant "local".
/// </summary>
public sealed partial class ApiKeys
{
    readonly Dictionary<string, Tenant> _byHash;

    ApiKeys(Dictionary<string, Tenant> byHash) => _byHash = byHash;

    public int Count => _byHash.Count;
    public bool IsEmpty => _byHash.Count == 0;
    public IEnumerable<string> TenantNames => _byHash.Values.Select(t => t.Name).Order(StringComparer.Ordinal);

    /// <summary>The tenant of every request when no keys are configured.</summary>
    public static Tenant Local { get; } = new("local", SHA256.HashData("orleansmixtral-conversations\0local"u8));

    /// <summary>The tenant whose key this is, or null.</summary>
    public Tenant? Find(string presentedKey)
    {
        if (presentedKey.Length is 0 or > 1024) return null;
        return _byHash.GetValueOrDefault(Hash(presentedKey));
    }

    static string Hash(string key) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    /// <summary>Reads the keys; throws <see cref="ArgumentException"/> with a line that never contains a key.</summary>
    public static ApiKeys Load(IConfiguration config, GatewayOptions options)
    {
        var entries = new List<(string? Tenant, string Key, string Where)>();
        foreach (var child in config.GetSection("Gateway:ApiKeys").GetChildren())
        {
            var where = $"Gateway:ApiKeys:{child.Key}";
            if (child.Value is { } plain) entries.Add((null, plain, where));
            else entries.Add((child["Tenant"], child["Key"] ?? throw new ArgumentException($"{where} has no Key"), where));
        }
        if (!string.IsNullOrWhiteSpace(options.ApiKeysFile))
        {
            var path = Path.GetFullPath(options.ApiKeysFile);
            if (!File.Exists(path)) throw new ArgumentException($"the API keys file {path} does not exist");
            var n = 0;
            foreach (var raw in File.ReadLines(path))
            {
                n++;
                var line = raw.Trim();
                if (line.Length == 0 || line.StartsWith('#')) continue;
                var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length > 2) throw new ArgumentException($"{path} line {n}: expected KEY or TENANT KEY");
                entries.Add(parts.Length == 2 ? (parts[0], parts[1], $"{path} line {n}") : (null, parts[0], $"{path} line {n}"));
            }
        }
        var byHash = new Dictionary<string, Tenant>(StringComparer.Ordinal);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (tenantName, key, where) in entries)
        {
            if (key.Length < 8 || key.Length > 1024 || key.Any(char.IsWhiteSpace))
                throw new ArgumentException($"{where}: an API key must be 8 to 1024 characters without spaces");
            var hash = Hash(key);
            var name = string.IsNullOrWhiteSpace(tenantName) ? "key-" + hash[..8].ToLowerInvariant() : tenantName.Trim();
            if (!TenantName().IsMatch(name)) throw new ArgumentException($"{where}: tenant names are 1 to 64 of A-Z a-z 0-9 . _ -");
            if (name == Local.Name) throw new ArgumentException($"{where}: the tenant name 'local' is reserved");
            if (byHash.ContainsKey(hash)) throw new ArgumentException($"{where}: this key is configured twice");
            if (!names.Add(name)) throw new ArgumentException($"{where}: the tenant '{name}' has another key already (each key is one tenant)");
            var conversationKey = SHA256.HashData(Encoding.UTF8.GetBytes("orleansmixtral-conversations\0" + key));
            byHash[hash] = new Tenant(name, conversationKey);
        }
        return new ApiKeys(byHash);
    }

    [GeneratedRegex("^[A-Za-z0-9._-]{1,64}$")]
    private static partial Regex TenantName();
}

/// <summary>
/// Conversation ids the gateway hands out: "conv_" + 24 hex digits (random) + 20 hex digits (an HMAC of the random part
/// under the tenant's conversation key). An id another tenant made, or one nobody made, fails the check: such a
/// conversation does not exist for the caller (404). The conversation grain's key is "TENANT/RANDOM".
/// </summary>
public static class ConversationIds
{
    const string Prefix = "conv_";
    const int RandomBytes = 12, MacBytes = 10;

    public static string New(Tenant tenant)
    {
        var random = RandomNumberGenerator.GetBytes(RandomBytes);
        return Prefix + Convert.ToHexStringLower(random) + Convert.ToHexStringLower(Mac(tenant, random));
    }

    /// <summary>The conversation grain key of <paramref name="id"/> if <paramref name="tenant"/> made it; else null.</summary>
    public static string? GrainKey(Tenant tenant, string? id)
    {
        if (id is null || id.Length != Prefix.Length + 2 * (RandomBytes + MacBytes) || !id.StartsWith(Prefix, StringComparison.Ordinal)) return null;
        Span<byte> bytes = stackalloc byte[RandomBytes + MacBytes];
        if (Convert.FromHexString(id.AsSpan(Prefix.Length), bytes, out _, out var written) != System.Buffers.OperationStatus.Done || written != bytes.Length)
            return null;
        var random = bytes[..RandomBytes].ToArray();
        if (!CryptographicOperations.FixedTimeEquals(Mac(tenant, random), bytes[RandomBytes..])) return null;
        return tenant.Name + "/" + Convert.ToHexStringLower(random);
    }

    static byte[] Mac(Tenant tenant, byte[] random) => HMACSHA256.HashData(tenant.ConversationKey, random)[..MacBytes];
}
