using OrleansMixtral.Grains.Contracts;
namespace OrleansMixtral.Grains;

/// <summary>
/// Where conversation state is kept: Sqlite (the default: a database file in <see cref="MixtralSiloOptions.DataDirectory"/>,
/// shared by the silos of one machine), Postgres (the production option: a PostgreSQL database all machines reach, with
/// the schema of tools/postgres/), Redis, or Memory (lost with the silo that holds it; only when asked for). External:
/// the host registers the grain storage itself.
/// </summary>
public enum ConversationStorageKind { Memory, Redis, External, Sqlite, Postgres }

/// <summary>
/// What a silo's engine loads and how the grains route turns. Bound from the configuration section "Mixtral" by the
/// silo host (appsettings, environment <c>Mixtral__Model=...</c>, command line <c>--Mixtral:Model=...</c> or the host's
/// short forms).
/// </summary>
public sealed class MixtralSiloOptions
{
    /// <summary>The model directory (Hugging Face layout). Relative paths are resolved against the working directory, then the repository root.</summary>
    public string Model { get; set; } = "models/tiny-mixtral";
    /// <summary>
    /// Run an engine on this silo (load the model's weights). False (<c>--Mixtral:Engine false</c>): the silo holds
    /// conversations and serves clients, reading only the model directory's tokenizer.json and config.json; their turns
    /// run on the engines of the cluster's other silos.
    /// </summary>
    public bool Engine { get; set; } = true;
    public BackendKind Backend { get; set; } = BackendKind.Auto;
    /// <summary>Hold the weights as int8 (weight-only, per output channel); implied by a pre-quantized checkpoint.</summary>
    public bool Int8 { get; set; }
    /// <summary>
    /// The GPU of a CUDA engine (<c>--Mixtral:Device N</c>): its index among the devices the silo's process sees, so
    /// <c>CUDA_VISIBLE_DEVICES</c> numbers the ones it lists from 0. One silo per GPU on a multi-GPU host; 0 on the CPU.
    /// </summary>
    public int Device { get; set; }
    /// <summary>KV cache budget in MiB (never less than one full context plus a block).</summary>
    public int KvCacheMegabytes { get; set; } = 256;
    /// <summary>Worker threads of the CPU backend; 0 = one per core.</summary>
    public int Threads { get; set; }
    /// <summary>Sequences decoded together in one engine step.</summary>
    public int MaxRunningSequences { get; set; } = 64;
    /// <summary>
    /// Requests waiting for the engine (beyond those running) before it refuses more: the gateway then answers 429 with
    /// Retry-After, stateless requests and conversation turns alike.
    /// </summary>
    public int MaxWaiting { get; set; } = 1024;
    /// <summary>
    /// Prompt tokens of one sequence per step (chunked prefill); null = the backend's default (512 on the CPU, 2048 on
    /// a GPU). The backend's forward size follows from it (the chunk plus the decodes that share its step).
    /// </summary>
    public int? PrefillChunkTokens { get; set; }
    /// <summary>Prompt tokens a step carries beside running decodes (<see cref="OrleansMixtral.Engine.EngineOptions.PromptTokensWhileDecoding"/>); null = a whole chunk.</summary>
    public int? PromptTokensWhileDecoding { get; set; }
    /// <summary>When a waiting request may start, given the KV cache (<see cref="OrleansMixtral.Engine.KvAdmission"/>).</summary>
    public global::OrleansMixtral.Engine.KvAdmission KvAdmission { get; set; } = global::OrleansMixtral.Engine.KvAdmission.MaxUtilization;

    /// <summary>
    /// A conversation's turn leaves the silo that holds its KV prefix for a less loaded one when that silo's engine has
    /// this many requests waiting for admission (or cannot fit the request in its KV cache now).
    /// </summary>
    public int RedirectWhenWaiting { get; set; } = 4;
    /// <summary>
    /// A conversation's prompt leaves room for a reply of this many tokens (or the turn's max tokens, if fewer; at most half
    /// the context): when it would not, the oldest turns are dropped (<c>OrleansMixtral.Tokenization.ConversationWindow</c>).
    /// </summary>
    public int ReplyReserveTokens { get; set; } = Tokenization.ConversationWindow.DefaultReplyReserveTokens;
    /// <summary>How long engine loads are cached by each silo's router.</summary>
    public int LoadCacheMilliseconds { get; set; } = 250;
    /// <summary>A conversation counts as resident on an engine for this long after its last turn there.</summary>
    public int ResidentSeconds { get; set; } = 600;
    /// <summary>When no token came from the engine for this long, the conversation probes the engine's silo (<see cref="CallWatchdog"/>).</summary>
    public int StallProbeMilliseconds { get; set; } = (int)WatchdogTimes.Default.StallCheck.TotalMilliseconds;
    /// <summary>A probe (or a load query) that takes longer than this counts as a failure.</summary>
    public int ProbeTimeoutMilliseconds { get; set; } = (int)WatchdogTimes.Default.ProbeTimeout.TotalMilliseconds;

    /// <summary>
    /// On the direct path, after the first token, at most one chunk per this interval (tokens produced meanwhile travel
    /// together). 0 sends every token as soon as it is read.
    /// </summary>
    public int DirectChunkIntervalMilliseconds { get; set; } = 4;
    /// <summary>Publish every chunk on the conversation's Orleans stream (turn off to save the per-chunk stream call).</summary>
    public bool PublishTokenStream { get; set; } = true;
    /// <summary>
    /// Polling period of the memory stream's pulling agents (Orleans' default is 100 ms). 20 ms: watchers see tokens
    /// about 11 ms after the caller, and the stream costs the engine no measurable speed on a 2-core CPU host (5 ms cost
    /// about 5 %: docs/PERFORMANCE-cluster.md).
    /// </summary>
    public int StreamPollMilliseconds { get; set; } = 20;
    /// <summary>A conversation publishes at most one stream event per this interval, merging the chunks produced meanwhile.</summary>
    public int StreamPublishIntervalMilliseconds { get; set; } = 20;
    /// <summary>Queues of the memory stream provider (each polled by one agent somewhere in the cluster).</summary>
    public int StreamQueues { get; set; } = 2;
    /// <summary>
    /// How long the token streams' events stay in the stream agents' cache after delivery. Watchers get an event within a
    /// polling period, and one who joins mid-turn gets the turn's start from the conversation grain, not from this cache;
    /// Orleans' default of 30 minutes held every chunk of every conversation that long (≈ 100 KB a conversation in the
    /// 30-minute soak: docs/RELIABILITY.md).
    /// </summary>
    public int StreamCacheSeconds { get; set; } = 60;
    /// <summary>
    /// An idle conversation leaves the silo's memory after this many minutes (at least 2): its grain activation (the
    /// state, the last turn's replay) and its token stream's entries in the stream agent and the stream's pub-sub grain.
    /// The next call for it reads it back from storage (one read; its KV prefix stays where it was). Orleans' default for
    /// a grain is 15: a silo then holds every conversation of the last quarter hour.
    /// </summary>
    public int ConversationIdleMinutes { get; set; } = 5;

    public ConversationStorageKind Storage { get; set; } = ConversationStorageKind.Sqlite;
    /// <summary>
    /// The silo's data directory: the conversation database (<see cref="DatabaseFileName"/>) with Sqlite storage, and the
    /// local cluster's id. Null: <see cref="DefaultDataDirectory"/> under the working directory. Relative paths resolve
    /// against the working directory.
    /// </summary>
    public string? DataDirectory { get; set; }
    /// <summary>Redis connection string for <see cref="ConversationStorageKind.Redis"/> storage (and Redis clustering in the host).</summary>
    public string? RedisConnectionString { get; set; }
    /// <summary>
    /// Npgsql connection string for <see cref="ConversationStorageKind.Postgres"/> storage (and PostgreSQL clustering in the
    /// host), e.g. <c>Host=db;Port=5432;Database=orleansmixtral;Username=mixtral</c>: a database with the schema of
    /// tools/postgres/ applied (tools/postgres/apply-schema.sh).
    /// </summary>
    public string? PostgresConnectionString { get; set; }

    /// <summary>The ADO.NET invariant of PostgreSQL for Orleans' ADO.NET providers (Npgsql).</summary>
    public const string PostgresInvariant = "Npgsql";

    public const string DefaultDataDirectory = "data";
    /// <summary>The conversation database's file name in the data directory (Sqlite storage).</summary>
    public const string DatabaseFileName = "conversations.db";

    /// <summary>The data directory as an absolute path.</summary>
    public string ResolveDataDirectory() =>
        Path.GetFullPath(string.IsNullOrWhiteSpace(DataDirectory) ? DefaultDataDirectory : DataDirectory, Environment.CurrentDirectory);

    /// <summary>
    /// <see cref="ConversationIdleMinutes"/> as a time; <see cref="ArgumentException"/> below 2 (Orleans collects idle
    /// activations once a minute and refuses an age that is not above that).
    /// </summary>
    public TimeSpan ConversationIdle() => ConversationIdleMinutes >= 2
        ? TimeSpan.FromMinutes(ConversationIdleMinutes)
        : throw new ArgumentException($"Mixtral:ConversationIdleMinutes must be at least 2, not {ConversationIdleMinutes}");

    /// <summary>The conversation database (Sqlite storage), an absolute path.</summary>
    public string DatabasePath => Path.Combine(ResolveDataDirectory(), DatabaseFileName);
}
