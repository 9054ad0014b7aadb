using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using Orleans.Hosting;
using Orleans.Runtime;
using Orleans.TestingHost;
using OrleansMixtral.Client;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// Three in-process silos, each with its own CPU engine over the tiny model (one worker thread each), a shared
/// durable grain storage for conversations, memory token streams, and failure detection tuned to seconds.
/// </summary>
public class ClusterFixture : IAsyncLifetime
{
    public const int Silos = 3;
    public InProcessTestCluster Cluster { get; private set; } = null!;
    public MixtralClient Client { get; private set; } = null!;

    public static MixtralSiloOptions SiloOptions() => new()
    {
        Model = RepoPaths.TinyModel,
        Threads = 1,
        KvCacheMegabytes = 16,
        PrefillChunkTokens = 64, // forward calls of 128 tokens: the chunk plus 64 decodes
        MaxRunningSequences = 16,
        Storage = ConversationStorageKind.External,
        StallProbeMilliseconds = 2000,
        ProbeTimeoutMilliseconds = 3000,
        LoadCacheMilliseconds = 100,
    };

    public static void FastFailureDetection(IServiceCollection services) =>
        services.Configure<ClusterMembershipOptions>(o =>
        {
            // Seconds, not the default tens of seconds, yet loose enough for silos starved of CPU by other test runs.
            o.ProbeTimeout = TimeSpan.FromSeconds(1);
            o.NumMissedProbesLimit = 3;
            o.NumVotesForDeathDeclaration = 1;
            o.TableRefreshTimeout = TimeSpan.FromSeconds(1);
            o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(2);
        });

    public async ValueTask InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder((short)Silos);
        builder.ConfigureSilo((_, silo) =>
        {
            silo.AddMixtral(SiloOptions());
            SharedGrainStorage.Register(silo.Services, ConversationGrain.StorageName);
            FastFailureDetection(silo.Services);
        });
        // A killed in-process silo is stopped without grace, but its host still waits up to ShutdownTimeout (30 s in
        // the test cluster) for its services: keep such a zombie short, as a crashed process would be.
        builder.ConfigureSiloHost((_, host) => host.Services.PostConfigure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(2)));
        builder.ConfigureClient(client => client.AddMemoryStreams(TokenStreams.Provider));
        Cluster = builder.Build();
        await Cluster.DeployAsync();
        Client = new MixtralClient(Cluster.Client) { Watchdog = new WatchdogTimes(TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(5)) };
    }

    public async ValueTask DisposeAsync()
    {
        if (Cluster is not null) await Cluster.DisposeAsync();
    }

    /// <summary>The engine host of a live silo.</summary>
    public SiloEngineHost Engine(string siloKey) =>
        Cluster.GetSiloServiceProvider(SiloAddress.FromParsableString(siloKey)).GetRequiredService<SiloEngineHost>();

    public static SamplingOptions Short(int maxTokens = 12) => new() { MaxTokens = maxTokens, Temperature = 0 };

    /// <summary>A turn that runs long enough to act on mid-generation (the tiny model decodes hundreds of tokens a second).</summary>
    public static SamplingOptions Long(int maxTokens = 900) => new() { MaxTokens = maxTokens, Temperature = 0, IgnoreEos = true };

    public static readonly Tokenization.MistralTokenizer Tokenizer =
        Tokenization.MistralTokenizer.Load(Path.Combine(RepoPaths.TinyModel, "tokenizer.json"));

    /// <summary>Ids of "[INST] message [/INST]" as a follow-up turn (the template of the message alone, less BOS).</summary>
    public static int[] FollowUpIds(string message) =>
        Tokenizer.EncodeChat([new ChatMessage(ChatRole.User, message)])[1..];

    public static async Task<List<TokenChunk>> ReadAll(IAsyncEnumerable<TokenChunk> chunks)
    {
        var list = new List<TokenChunk>();
        await foreach (var c in chunks) list.Add(c);
        return list;
    }

    /// <summary>Polls until <paramref name="condition"/> holds (or fails after <paramref name="seconds"/>).</summary>
    public static async Task Eventually(Func<bool> condition, string what, double seconds = 10)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (!condition())
        {
            if (DateTime.UtcNow > until) Assert.Fail($"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }
}

/// <summary>The tests that share one 3-silo cluster run one after another (the cluster's engines are shared state).</summary>
[CollectionDefinition(Name)]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>
{
    public const string Name = "cluster";
}
