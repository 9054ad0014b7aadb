using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Runtime;
using Orleans.Storage;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using StackExchange.Redis;

namespace OrleansMixtral.Hosting;

public static partial class SiloBuilderExtensions
{
    /// <summary>
    /// Adds the serving grains to a silo: the silo's engine (loaded when the silo starts, unless it runs none), the
    /// tokenizer conversations use, the engine grain's placement,
    /// the router, the token stream provider (memory streams) and conversation storage. Clustering and endpoints are
    /// the host's business (the silo host, or the test cluster).
    /// </summary>
    public static ISiloBuilder AddMixtral(this ISiloBuilder silo, MixtralSiloOptions options)
    {
        var services = silo.Services;
        services.AddSingleton<IOptions<MixtralSiloOptions>>(Options.Create(options));
        services.AddSingleton<SiloEngineHost>();
        services.AddSingleton<ISiloEngine>(sp => sp.GetRequiredService<SiloEngineHost>());
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<SiloEngineHost>());
        services.AddSingleton<ITokenizerService, ModelTokenizerService>();
        services.AddSingleton<EngineRouter>();
        services.AddSingleton<EngineMetrics>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, MetricsStarter>();
        silo.AddPlacementDirector<SiloEnginePlacement, SiloEnginePlacementDirector>();
        // a turn's trace crosses grain calls (conversation grain → engine grain) and silos (GrainTracing)
        silo.AddActivityPropagation();

        var idle = options.ConversationIdle();
        silo.AddMemoryStreams(TokenStreams.Provider, streams =>
        {
            streams.ConfigurePartitioning(Math.Max(1, options.StreamQueues));
            streams.ConfigurePullingAgent(agent => agent.Configure(o =>
            {
                o.GetQueueMsgsTimerPeriod = TimeSpan.FromMilliseconds(Math.Max(1, options.StreamPollMilliseconds));
                // The agent's entry for a conversation's stream goes with the conversation (Orleans keeps it 30 minutes).
                o.StreamInactivityPeriod = idle;
            }));
            // Events leave the cache soon after delivery, and so does the cache's note of each stream's last purged event.
            var cache = TimeSpan.FromSeconds(Math.Max(1, options.StreamCacheSeconds));
            streams.ConfigureCacheEviction(eviction => eviction.Configure(o =>
            {
                o.DataMinTimeInCache = cache;
                o.DataMaxAgeInCache = cache;
                o.MetadataMinTimeInCache = cache;
            }));
        });
        // Each conversation's stream has a pub-sub record (its producer, its watchers). Memory storage would keep every
        // record for the life of the process, one more per conversation ever streamed; in the conversations' storage a
        // record costs disk beside the conversation's own, not memory, and outlives the silo that held it (a watcher's
        // subscription survives a silo stopping). Orleans' pub-sub grain finds its storage by this name.
        services.AddKeyedSingleton<IGrainStorage>(PubSubStore, (sp, _) => sp.GetRequiredKeyedService<IGrainStorage>(ConversationGrain.StorageName));
        silo.Configure<GrainCollectionOptions>(o =>
        {
            o.ClassSpecificCollectionAge[typeof(ConversationGrain).FullName!] = idle;
            o.ClassSpecificCollectionAge[PubSubGrainClass] = idle;
        });

        switch (options.Storage)
        {
            case ConversationStorageKind.Sqlite:
                silo.AddSqliteGrainStorage(ConversationGrain.StorageName, o => o.DatabasePath = options.DatabasePath);
                break;
            case ConversationStorageKind.Memory:
                silo.AddMemoryGrainStorage(ConversationGrain.StorageName);
                services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, MemoryStorageWarning>();
                break;
            case ConversationStorageKind.Postgres:
                if (string.IsNullOrWhiteSpace(options.PostgresConnectionString))
                    throw new InvalidOperationException("Storage=postgres needs a PostgreSQL connection string (PostgresConnectionString)");
                // Orleans' ADO.NET grain storage over the project's schema (tools/postgres/schema-persistence.sql).
                silo.AddAdoNetGrainStorage(ConversationGrain.StorageName, o =>
                {
                    o.Invariant = MixtralSiloOptions.PostgresInvariant;
                    o.ConnectionString = options.PostgresConnectionString;
                });
                break;
            case ConversationStorageKind.Redis:
                if (string.IsNullOrWhiteSpace(options.RedisConnectionString))
                    throw new InvalidOperationException("Storage=redis needs a Redis connection string (RedisConnectionString)");
                silo.AddRedisGrainStorage(ConversationGrain.StorageName, o =>
                    o.ConfigurationOptions = ConfigurationOptions.Parse(options.RedisConnectionString));
                break;
            case ConversationStorageKind.External:
                break; // the host registered a grain storage named ConversationGrain.StorageName itself
        }
        return silo;
    }

    /// <summary>The storage name under which Orleans' stream pub-sub grains keep their state.</summary>
    public const string PubSubStore = "PubSubStore";
    /// <summary>The class of Orleans' stream pub-sub grain (one activation per stream that has had a producer or a watcher).</summary>
    const string PubSubGrainClass = "Orleans.Streams.PubSubRendezvousGrain";

    /// <summary>Says, when the silo starts, that its conversations will not outlive it.</summary>
    sealed partial class MemoryStorageWarning(ILogger<MemoryStorageWarning> log) : ILifecycleParticipant<ISiloLifecycle>
    {
        public void Participate(ISiloLifecycle lifecycle) =>
            lifecycle.Subscribe(nameof(MemoryStorageWarning), ServiceLifecycleStage.RuntimeStorageServices, _ =>
            {
                LogMemoryStorage(log);
                return Task.CompletedTask;
            });

        [LoggerMessage(Level = LogLevel.Warning, Message = "Conversation storage is memory (Storage=memory): conversations live in the silos' memory and are lost when the silo holding them stops; use the default sqlite, or redis")]
        static partial void LogMemoryStorage(ILogger log);
    }

    /// <summary>Creates the engine's metrics with the silo (the dashboard lists instruments that exist).</summary>
    sealed class MetricsStarter(IServiceProvider services) : ILifecycleParticipant<ISiloLifecycle>
    {
        public void Participate(ISiloLifecycle lifecycle) =>
            lifecycle.Subscribe(nameof(MetricsStarter), ServiceLifecycleStage.ApplicationServices, _ =>
            {
                services.GetRequiredService<EngineMetrics>();
                return Task.CompletedTask;
            });
    }
}
