using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans;
using Orleans.Hosting;
using Orleans.Runtime;
using Orleans.Storage;
using OrleansMixtral.Grains;
using OrleansMixtral.Hosting;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// The silo's default conversation storage, a SQLite file: states round-trip through the silo's own storage serializer,
/// ETags guard every write and clear, and two storages on one file (two silos of a machine) see each other's writes.
/// </summary>
public sealed class SqliteGrainStorageTests : IDisposable
{
    const string StateName = "conversation";
    readonly string _directory = Path.Combine(Path.GetTempPath(), "mixtral-sqlite-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>The serializer a silo gives grain storage by default (what the Redis storage uses too).</summary>
    static readonly Lazy<IGrainStorageSerializer> SiloSerializer = new(() =>
    {
        var builder = Host.CreateApplicationBuilder();
        builder.UseOrleans(silo => silo.UseLocalhostClustering(RedisServer.FreePort(), RedisServer.FreePort()));
        return builder.Build().Services.GetRequiredService<IGrainStorageSerializer>();
    });

    string DatabasePath => Path.Combine(_directory, "nested", MixtralSiloOptions.DatabaseFileName);

    SqliteGrainStorage Storage(string serviceId = "mixtral") =>
        new("conversations", new SqliteGrainStorageOptions { DatabasePath = DatabasePath, BusyTimeoutMilliseconds = 5000 }, SiloSerializer.Value, serviceId);

    static GrainId Grain(string key) => GrainId.Create("conversation", key);

    static ConversationState Sample(int turns) => new()
    {
        Created = true,
        Messages = [new(ChatRole.System, "Be brief."), new(ChatRole.User, "Hi ünïcode ✓"), new(ChatRole.Assistant, "Hello.")],
        Tokens = [1, 733, 16289, 28793, 2, int.MaxValue, 0],
        KvSilo = "S127.0.0.1:11111:123",
        KvTokens = 6,
        Turns = turns,
    };

    static GrainState<ConversationState> Empty() => new(new ConversationState());

    [Fact(Timeout = 30_000)]
    public async Task Writes_read_back_exactly_and_clear()
    {
        var storage = Storage();
        var id = Grain("a");
        var missing = Empty();
        await storage.ReadStateAsync(StateName, id, missing);
        Assert.False(missing.RecordExists);
        Assert.Null(missing.ETag);
        Assert.True(File.Exists(DatabasePath), "the database and its directory are created");

        var written = new GrainState<ConversationState>(Sample(1));
        await storage.WriteStateAsync(StateName, id, written);
        Assert.True(written.RecordExists);
        Assert.NotNull(written.ETag);

        var read = Empty();
        await storage.ReadStateAsync(StateName, id, read);
        Assert.True(read.RecordExists);
        Assert.Equal(written.ETag, read.ETag);
        Assert.True(read.State!.Created);
        Assert.Equal(Sample(1).Messages, read.State!.Messages);
        Assert.Equal(Sample(1).Tokens, read.State!.Tokens);
        Assert.Equal("S127.0.0.1:11111:123", read.State!.KvSilo);
        Assert.Equal((6, 1), (read.State!.KvTokens, read.State!.Turns));

        // Another grain, and the same grain under another service id, are other rows.
        var other = Empty();
        await storage.ReadStateAsync(StateName, Grain("b"), other);
        Assert.False(other.RecordExists);
        var otherService = Empty();
        await Storage("another-service").ReadStateAsync(StateName, id, otherService);
        Assert.False(otherService.RecordExists);

        read.State!.Turns = 2;
        var before = read.ETag;
        await storage.WriteStateAsync(StateName, id, read);
        Assert.NotEqual(before, read.ETag);

        await storage.ClearStateAsync(StateName, id, read);
        Assert.False(read.RecordExists);
        Assert.Null(read.ETag);
        var gone = Empty();
        await storage.ReadStateAsync(StateName, id, gone);
        Assert.False(gone.RecordExists);

        using var connection = new SqliteConnection($"Data Source={DatabasePath}");
        connection.Open();
        using var mode = connection.CreateCommand();
        mode.CommandText = "PRAGMA journal_mode;";
        Assert.Equal("wal", (string)mode.ExecuteScalar()!);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_stale_etag_is_a_conflict()
    {
        var storage = Storage();
        var id = Grain("c");
        var first = new GrainState<ConversationState>(Sample(1));
        await storage.WriteStateAsync(StateName, id, first);

        // A grain that never read the stored state may not overwrite it.
        var blind = new GrainState<ConversationState>(Sample(5));
        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.WriteStateAsync(StateName, id, blind));

        var reader = Empty();
        await storage.ReadStateAsync(StateName, id, reader);
        reader.State!.Turns = 2;
        await storage.WriteStateAsync(StateName, id, reader);

        first.State!.Turns = 9; // first's ETag is now stale
        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.WriteStateAsync(StateName, id, first));
        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.ClearStateAsync(StateName, id, first));

        var check = Empty();
        await storage.ReadStateAsync(StateName, id, check);
        Assert.Equal(2, check.State!.Turns);
        Assert.Equal(reader.ETag, check.ETag);

        // Cleared by one, then written by a grain holding the old ETag: a conflict too (the row is gone).
        await storage.ClearStateAsync(StateName, id, check);
        reader.State!.Turns = 3;
        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.WriteStateAsync(StateName, id, reader));
    }

    [Fact(Timeout = 60_000)]
    public async Task Two_storages_on_one_file_see_each_others_writes()
    {
        var a = Storage();
        var b = Storage();
        var id = Grain("shared");
        var byA = new GrainState<ConversationState>(Sample(1));
        await a.WriteStateAsync(StateName, id, byA);

        var byB = Empty();
        await b.ReadStateAsync(StateName, id, byB);
        Assert.True(byB.RecordExists);
        Assert.Equal(Sample(1).Tokens, byB.State!.Tokens);
        byB.State!.Turns = 2;
        await b.WriteStateAsync(StateName, id, byB);

        byA.State!.Turns = 7;
        await Assert.ThrowsAsync<InconsistentStateException>(() => a.WriteStateAsync(StateName, id, byA));
        var again = Empty();
        await a.ReadStateAsync(StateName, id, again);
        Assert.Equal(2, again.State!.Turns);

        // Both write at once, many grains each: every write lands (writers wait for each other, nobody fails busy).
        const int perStorage = 40;
        await Task.WhenAll(new[] { a, b }.Select((storage, n) => Task.Run(async () =>
        {
            for (var i = 0; i < perStorage; i++)
            {
                var state = new GrainState<ConversationState>(Sample(i));
                await storage.WriteStateAsync(StateName, Grain($"w{n}-{i}"), state);
                state.State!.Turns = i + 100;
                await storage.WriteStateAsync(StateName, Grain($"w{n}-{i}"), state);
            }
        })));
        for (var n = 0; n < 2; n++)
            for (var i = 0; i < perStorage; i++)
            {
                var state = Empty();
                await (n == 0 ? b : a).ReadStateAsync(StateName, Grain($"w{n}-{i}"), state);
                Assert.Equal(i + 100, state.State!.Turns);
            }
    }

    [Fact(Timeout = 30_000)]
    public async Task An_unusable_path_fails_with_a_clear_error()
    {
        Directory.CreateDirectory(_directory);
        var file = Path.Combine(_directory, "a-file");
        await File.WriteAllTextAsync(file, "not a directory");
        var storage = new SqliteGrainStorage("conversations",
            new SqliteGrainStorageOptions { DatabasePath = Path.Combine(file, "conversations.db") }, SiloSerializer.Value, "mixtral");
        var e = await Assert.ThrowsAsync<SqliteGrainStorageException>(() => storage.EnsureInitializedAsync());
        Assert.Contains(file, e.Message);
    }

    public void Dispose()
    {
        SqliteConnection.ClearAllPools(); // release the file before deleting it
        try { Directory.Delete(_directory, recursive: true); } catch (IOException) { }
    }
}
