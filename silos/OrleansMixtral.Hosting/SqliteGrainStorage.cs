using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Runtime;
using Orleans.Storage;


namespace OrleansMixtral.Hosting;

/// <summary>Settings of <see cref="SqliteGrainStorage"/>.</summary>
public sealed class SqliteGrainStorageOptions
{
    /// <summary>The database file; it and its directory are created when missing.</summary>
    public string DatabasePath { get; set; } = "";
    /// <summary>
    /// How long a statement waits for the database's write lock, which another silo (process) sharing the file may hold,
    /// before it fails.
    /// </summary>
    public int BusyTimeoutMilliseconds { get; set; } = 10_000;
    /// <summary>How states are serialized; null: the silo's <see cref="IGrainStorageSerializer"/> (as Orleans' Redis storage does).</summary>
    public IGrainStorageSerializer? GrainStorageSerializer { get; set; }
}

/// <summary>
/// Grain storage in an embedded SQLite database (Microsoft.Data.Sqlite): one file that every silo on the machine may
/// share. The file is in WAL mode (readers never wait for a writer, and a writer waits at most
/// <see cref="SqliteGrainStorageOptions.BusyTimeoutMilliseconds"/> for another), each write is one transaction that is
/// on disk when it returns, and every state carries an ETag: a write or clear based on a stale ETag throws
/// <see cref="InconsistentStateException"/>, as with Orleans' other providers. Rows are keyed by the service id, the
/// state name and the grain id, so services sharing a file do not see each other's states.
/// </summary>
public sealed partial class SqliteGrainStorage : IGrainStorage, ILifecycleParticipant<ISiloLifecycle>
{
    readonly string _name;
    readonly string _serviceId;
    readonly SqliteGrainStorageOptions _options;
    readonly IGrainStorageSerializer _serializer;
    readonly ILogger _log;
    readonly string _connectionString;
    readonly Lazy<Task> _initialized;

    public SqliteGrainStorage(string name, SqliteGrainStorageOptions options, IGrainStorageSerializer serializer, string serviceId, ILogger? log = null)
    {
        if (string.IsNullOrWhiteSpace(options.DatabasePath)) throw new ArgumentException("the SQLite grain storage needs a database path", nameof(options));
        _name = name;
        _options = options;
        _serializer = options.GrainStorageSerializer ?? serializer;
        _serviceId = serviceId;
        _log = log ?? NullLogger.Instance;
        DatabasePath = Path.GetFullPath(options.DatabasePath);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = DatabasePath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
            // Microsoft.Data.Sqlite retries a busy statement until the command timeout too (seconds, at least 1).
            DefaultTimeout = Math.Max(1, (options.BusyTimeoutMilliseconds + 999) / 1000),
        }.ToString();
        _initialized = new(InitializeAsync, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>The database file (absolute).</summary>
    public string DatabasePath { get; }

    /// <summary>The storage as the silo creates it for <c>AddSqliteGrainStorage(name, ...)</c>.</summary>
    public static SqliteGrainStorage Create(IServiceProvider services, string name)
    {
        var options = services.GetRequiredService<IOptionsMonitor<SqliteGrainStorageOptions>>().Get(name);
        return new SqliteGrainStorage(name, options,
            options.GrainStorageSerializer ?? services.GetRequiredService<IGrainStorageSerializer>(),
            services.GetRequiredService<IOptions<ClusterOptions>>().Value.ServiceId,
            services.GetRequiredService<ILoggerFactory>().CreateLogger<SqliteGrainStorage>());
    }

    /// <summary>Opens (creating) the database when the silo starts, so that an unusable path fails the start, not the first conversation.</summary>
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(SqliteGrainStorage) + "-" + _name, ServiceLifecycleStage.RuntimeStorageServices, _ => EnsureInitializedAsync());

    /// <summary>Creates the directory, the file and the table if missing, and switches the file to WAL mode.</summary>
    public Task EnsureInitializedAsync() => _initialized.Value;

    Task InitializeAsync() => Task.Run(() =>
    {
        try
        {
            if (Path.GetDirectoryName(DatabasePath) is { Length: > 0 } directory) Directory.CreateDirectory(directory);
            using var connection = Open();
            // WAL is a property of the file (it stays on for every later connection); setting it needs a moment with no
            // other writer, which the busy timeout waits for.
            Execute(connection, "PRAGMA journal_mode=WAL;");
            Execute(connection, """
                CREATE TABLE IF NOT EXISTS grain_state (
                    service_id TEXT NOT NULL,
                    state_name TEXT NOT NULL,
                    grain_id   TEXT NOT NULL,
                    etag       TEXT NOT NULL,
                    data       BLOB NOT NULL,
                    updated_at TEXT NOT NULL,
                    PRIMARY KEY (service_id, state_name, grain_id)
                ) WITHOUT ROWID;
                """);
            LogOpened(_log, _name, DatabasePath);
        }
        catch (Exception e) when (e is SqliteException or IOException or UnauthorizedAccessException)
        {
            throw new SqliteGrainStorageException($"the conversation database {DatabasePath} cannot be opened: {e.Message}", e);
        }
    });

    SqliteConnection Open()
    {
        var connection = new SqliteConnection(_connectionString);
        connection.Open();
        Execute(connection, $"PRAGMA busy_timeout={Math.Max(0, _options.BusyTimeoutMilliseconds)};");
        return connection;
    }

    static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    static SqliteCommand Command(SqliteConnection connection, string sql, string serviceId, string stateName, GrainId grainId)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        command.Parameters.AddWithValue("$service", serviceId);
        command.Parameters.AddWithValue("$state", stateName);
        command.Parameters.AddWithValue("$grain", grainId.ToString());
        return command;
    }

    const string Key = "service_id = $service AND state_name = $state AND grain_id = $grain";

    // Microsoft.Data.Sqlite's async methods run synchronously: every operation runs on the thread pool, never on the
    // grain's scheduler, which a write waiting for another silo's lock would otherwise hold.

    public async Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await EnsureInitializedAsync();
        var row = await Task.Run(() =>
        {
            using var connection = Open();
            using var command = Command(connection, $"SELECT etag, data FROM grain_state WHERE {Key};", _serviceId, stateName, grainId);
            using var reader = command.ExecuteReader();
            return reader.Read() ? (ETag: reader.GetString(0), Data: (byte[])reader.GetValue(1)) : default;
        });
        if (row.ETag is null)
        {
            grainState.ETag = null;
            grainState.RecordExists = false;
            return;
        }
        grainState.State = _serializer.Deserialize<T>(new BinaryData(row.Data));
        grainState.ETag = row.ETag;
        grainState.RecordExists = true;
    }

    public async Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await EnsureInitializedAsync();
        var data = _serializer.Serialize(grainState.State).ToArray();
        var expected = grainState.ETag;
        var etag = Guid.NewGuid().ToString("N");
        var written = await Task.Run(() =>
        {
            using var connection = Open();
            // A state the grain has not read from storage (no ETag) may only be inserted; one it has read may only replace
            // the version it read.
            using var command = Command(connection, expected is null
                ? "INSERT INTO grain_state (service_id, state_name, grain_id, etag, data, updated_at) VALUES ($service, $state, $grain, $etag, $data, $now) ON CONFLICT DO NOTHING;"
                : $"UPDATE grain_state SET etag = $etag, data = $data, updated_at = $now WHERE {Key} AND etag = $expected;",
                _serviceId, stateName, grainId);
            command.Parameters.AddWithValue("$etag", etag);
            command.Parameters.AddWithValue("$data", data);
            command.Parameters.AddWithValue("$now", DateTimeOffset.UtcNow.ToString("O"));
            if (expected is not null) command.Parameters.AddWithValue("$expected", expected);
            return command.ExecuteNonQuery();
        });
        if (written != 1)
            throw new InconsistentStateException(
                $"Version conflict (WriteState): provider {_name}, service {_serviceId}, state {stateName}, grain {grainId}: " +
                (expected is null ? "the state exists in storage but the grain never read it" : $"ETag {expected} is no longer the stored version"),
                storedEtag: "unknown", currentEtag: expected ?? "none");
        grainState.ETag = etag;
        grainState.RecordExists = true;
    }

    public async Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        await EnsureInitializedAsync();
        var expected = grainState.ETag;
        var conflict = await Task.Run(() =>
        {
            using var connection = Open();
            if (expected is null)
            {
                // Nothing read, nothing to delete: a conflict only if a state was stored meanwhile.
                using var exists = Command(connection, $"SELECT 1 FROM grain_state WHERE {Key};", _serviceId, stateName, grainId);
                return exists.ExecuteScalar() is not null;
            }
            using var command = Command(connection, $"DELETE FROM grain_state WHERE {Key} AND etag = $expected;", _serviceId, stateName, grainId);
            command.Parameters.AddWithValue("$expected", expected);
            return command.ExecuteNonQuery() != 1;
        });
        if (conflict)
            throw new InconsistentStateException(
                $"Version conflict (ClearState): provider {_name}, service {_serviceId}, state {stateName}, grain {grainId}: ETag {expected ?? "none"} is not the stored version",
                storedEtag: "unknown", currentEtag: expected ?? "none");
        grainState.ETag = null;
        grainState.RecordExists = false;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Grain storage {Name}: SQLite database {Path} (WAL)")]
    static partial void LogOpened(ILogger log, string name, string path);
}

/// <summary>The SQLite database cannot be used (a path that cannot be created, a file that is not a database).</summary>
public sealed class SqliteGrainStorageException(string message, Exception inner) : Exception(message, inner);

public static class SqliteGrainStorageExtensions
{
    /// <summary>Adds a grain storage provider named <paramref name="name"/> in a SQLite database file.</summary>
    public static ISiloBuilder AddSqliteGrainStorage(this ISiloBuilder silo, string name, Action<SqliteGrainStorageOptions> configure)
    {
        silo.Services.AddOptions<SqliteGrainStorageOptions>(name).Configure(configure);
        Orleans.Runtime.Hosting.StorageProviderExtensions.AddGrainStorage(silo.Services, name, SqliteGrainStorage.Create);
        return silo;
    }
}
