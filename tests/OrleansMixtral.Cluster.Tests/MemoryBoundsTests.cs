using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Hosting;
using Orleans.Storage;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// What bounds a silo's memory per conversation (docs/RELIABILITY.md, "Memory"): the token streams' cache keeps events
/// <see cref="MixtralSiloOptions.StreamCacheSeconds"/> (Orleans' default, 30 minutes, held every chunk of every
/// conversation); an idle conversation's grain, its stream's pub-sub grain and the stream agent's entry for it go after
/// <see cref="MixtralSiloOptions.ConversationIdleMinutes"/>; the streams' pub-sub records live in the conversations'
/// storage, not in silo memory (where one was added per conversation for the life of the process).
/// </summary>
public sealed class MemoryBoundsTests
{
    /// <summary>The silo's services as <see cref="Hosting.SiloBuilderExtensions.AddMixtral"/> configures them (built, not started: nothing loads).</summary>
    static IHost Silo(MixtralSiloOptions options)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.UseOrleans(silo =>
        {
            silo.UseLocalhostClustering(RedisServer.FreePort(), RedisServer.FreePort());
            silo.AddMixtral(options);
        });
        return builder.Build();
    }

    [Fact]
    public void The_stream_cache_and_idle_conversations_are_bounded_by_the_silo_options_not_Orleans_defaults()
    {
        var options = new MixtralSiloOptions { Model = RepoPaths.TinyModel, Storage = ConversationStorageKind.Memory, StreamCacheSeconds = 7, ConversationIdleMinutes = 3 };
        using var host = Silo(options);
        var services = host.Services;

        var eviction = services.GetRequiredService<IOptionsMonitor<StreamCacheEvictionOptions>>().Get(TokenStreams.Provider);
        Assert.Equal(TimeSpan.FromSeconds(7), eviction.DataMaxAgeInCache);
        Assert.Equal(TimeSpan.FromSeconds(7), eviction.DataMinTimeInCache);
        Assert.Equal(TimeSpan.FromSeconds(7), eviction.MetadataMinTimeInCache);
        Assert.Equal(TimeSpan.FromMinutes(3), services.GetRequiredService<IOptionsMonitor<StreamPullingAgentOptions>>().Get(TokenStreams.Provider).StreamInactivityPeriod);
        var collection = services.GetRequiredService<IOptions<GrainCollectionOptions>>().Value;
        Assert.Equal(TimeSpan.FromMinutes(3), collection.ClassSpecificCollectionAge[typeof(ConversationGrain).FullName!]);
        Assert.Equal(TimeSpan.FromMinutes(3), collection.ClassSpecificCollectionAge["Orleans.Streams.PubSubRendezvousGrain"]);
        // Orleans checks its options when the silo starts (the ages above its one-minute collection quantum): these pass.
        foreach (var validator in services.GetServices<IConfigurationValidator>()) validator.ValidateConfiguration();

        // The streams' pub-sub records go to the conversations' storage: one instance, not a memory store of its own.
        Assert.Same(services.GetRequiredKeyedService<IGrainStorage>(ConversationGrain.StorageName),
            services.GetRequiredKeyedService<IGrainStorage>(Hosting.SiloBuilderExtensions.PubSubStore));
    }

    [Fact]
    public void The_defaults_keep_stream_events_a_minute_and_idle_conversations_five()
    {
        var options = new MixtralSiloOptions();
        Assert.Equal(60, options.StreamCacheSeconds);
        Assert.Equal(TimeSpan.FromMinutes(5), options.ConversationIdle());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(0)]
    [InlineData(-5)]
    public void An_idle_time_Orleans_would_refuse_at_start_is_refused_naming_the_setting(int minutes)
    {
        var e = Assert.Throws<ArgumentException>(() => new MixtralSiloOptions { ConversationIdleMinutes = minutes }.ConversationIdle());
        Assert.Equal($"Mixtral:ConversationIdleMinutes must be at least 2, not {minutes}", e.Message);
    }
}
