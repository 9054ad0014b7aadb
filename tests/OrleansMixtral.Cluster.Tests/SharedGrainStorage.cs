using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Runtime;
using Orleans.Serialization;
using Orleans.Storage;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// Grain storage that outlives any silo of the in-process test cluster (a dictionary of serialized states shared by
/// every silo in the process), standing in for an external store such as Redis: killing a silo loses nothing stored.
/// Orleans' memory storage would not do: it keeps states in grains spread over the silos.
/// </summary>
public sealed class SharedGrainStorage(Serializer serializer) : IGrainStorage
{
    static readonly ConcurrentDictionary<string, (byte[] State, string ETag)> Store = new();

    public static int Count => Store.Count;

    /// <summary>The stored states' keys: the state's name (the grain type's, for Orleans' own grains), '/', the grain id.</summary>
    public static IReadOnlyCollection<string> Keys => [.. Store.Keys];

    public Task ReadStateAsync<T>(string grainType, GrainId grainId, IGrainState<T> grainState)
    {
        if (Store.TryGetValue(Key(grainType, grainId), out var entry))
        {
            grainState.State = serializer.Deserialize<T>(entry.State);
            grainState.ETag = entry.ETag;
            grainState.RecordExists = true;
        }
        return Task.CompletedTask;
    }

    public Task WriteStateAsync<T>(string grainType, GrainId grainId, IGrainState<T> grainState)
    {
        var key = Key(grainType, grainId);
        var etag = Guid.NewGuid().ToString("N");
        var bytes = serializer.SerializeToArray(grainState.State);
        Store.AddOrUpdate(key, _ =>
        {
            if (grainState.ETag is not null) throw new InconsistentStateException("the state was deleted meanwhile");
            return (bytes, etag);
        }, (_, old) =>
        {
            if (old.ETag != grainState.ETag) throw new InconsistentStateException($"etag mismatch: stored {old.ETag}, grain has {grainState.ETag}");
            return (bytes, etag);
        });
        grainState.ETag = etag;
        grainState.RecordExists = true;
        return Task.CompletedTask;
    }

    public Task ClearStateAsync<T>(string grainType, GrainId grainId, IGrainState<T> grainState)
    {
        Store.TryRemove(Key(grainType, grainId), out _);
        grainState.ETag = null;
        grainState.RecordExists = false;
        return Task.CompletedTask;
    }

    static string Key(string grainType, GrainId id) => grainType + "/" + id;

    public static void Register(IServiceCollection services, string name) =>
        Orleans.Runtime.Hosting.StorageProviderExtensions.AddGrainStorage(services, name,
            (sp, _) => new SharedGrainStorage(sp.GetRequiredService<Serializer>()));
}
