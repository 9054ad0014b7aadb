using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans;
using Orleans.Hosting;
using Orleans.Metadata;
using Orleans.Runtime;
using Orleans.Serialization;
using Orleans.Serialization.Invocation;
using Orleans.Serialization.TypeSystem;
using Orleans.Storage;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// Conversations stored by an older build still load, and a silo or client of an older build still understands this
/// one's grain calls: tests/fixtures/wire holds bytes written by the build named in its README (a conversation's state
/// as every conversation storage writes it, and grain-call values as Orleans sends them, each with its type's wire name),
/// and the names of the grain interfaces and their calls. Each is read back field by field, and today's types write the
/// same values to the same bytes (so an older build reads them too).
/// </summary>
public sealed class WireCompatibilityTests
{
    static string Fixture(string name) => Path.Combine(RepoPaths.Fixtures, "wire", name);

    /// <summary>A silo's services, not started: its serializer and the storage serializer every conversation storage uses.</summary>
    static readonly Lazy<IServiceProvider> Silo = new(() =>
    {
        var builder = Host.CreateApplicationBuilder();
        builder.UseOrleans(silo => silo.UseLocalhostClustering(RedisServer.FreePort(), RedisServer.FreePort()));
        return builder.Build().Services;
    });

    static Serializer Wire => Silo.Value.GetRequiredService<Serializer>();

    static ConversationState State() => new()
    {
        Messages =
        [
            new(ChatRole.System, "Be brief."),
            new(ChatRole.User, "Hi ünïcode ✓"),
            new(ChatRole.Assistant, "Hello."),
            new(ChatRole.User, "Again?"),
            new(ChatRole.Assistant, "Yes."),
        ],
        Tokens = [1, 733, 16289, 28793, 2, int.MaxValue, 0],
        KvSilo = "S127.0.0.1:11111:123",
        KvTokens = 6,
        Turns = 2,
        Created = true,
        DroppedTurns = 1,
        TurnStarts = [0, 4],
        ReplyStarts = [3, 6],
    };

    static TurnEnd End() => new()
    {
        Finish = FinishReason.Length,
        Usage = new TokenUsage(100, 64, 20) { DroppedTurns = 3 },
        Error = "an error",
        Silo = "S10.0.0.2:11111:7",
        EngineTtftMs = 12.5,
        EngineElapsedMs = 250.25,
        Text = "the whole reply",
        Overloaded = true,
    };

    static TokenLogprobs Logprobs(int id) => new(id, -0.25f, [id, 7], [-0.25f, -2.5f]);

    /// <summary>
    /// Every conversation storage (SQLite, Redis, PostgreSQL, memory) writes states with the silo's storage serializer:
    /// Orleans' JSON, whose records name each object's .NET type. Records of older builds name the messages' old type
    /// (OrleansMixtral.Grains.ChatEntry, a type that no longer exists); they load, and today's records name no type for the
    /// messages (an older build reads those by the property's declared type: checked by hand at b22b08c).
    /// </summary>
    [Fact]
    public void A_conversation_stored_as_JSON_by_an_older_build_loads()
    {
        var storage = Silo.Value.GetRequiredService<IGrainStorageSerializer>();
        var stored = File.ReadAllBytes(Fixture("conversation-state.json"));
        AssertState(storage.Deserialize<ConversationState>(new BinaryData(stored)));

        var today = storage.Serialize(State()).ToString();
        // One line in the store; cut here at commas between members.
        const string expected = """
            {"$id":"1","$type":"OrleansMixtral.Grains.ConversationState, OrleansMixtral.Grains","Messages":[{"$id":"2","Content":"Be brief."},
            {"$id":"3","Role":1,"Content":"Hi ünïcode ✓"},{"$id":"4","Role":2,"Content":"Hello."},{"$id":"5","Role":1,"Content":"Again?"},
            {"$id":"6","Role":2,"Content":"Yes."}],"Tokens":{"$type":"System.Int32[], System.Private.CoreLib","$values":[1,733,16289,28793,2,2147483647,0]},
            "KvSilo":"S127.0.0.1:11111:123","KvTokens":6,"Turns":2,"Created":true,"DroppedTurns":1,
            "TurnStarts":{"$type":"System.Int32[], System.Private.CoreLib","$values":[0,4]},"ReplyStarts":{"$type":"System.Int32[], System.Private.CoreLib","$values":[3,6]}}
            """;
        Assert.Equal(expected.ReplaceLineEndings(""), today);
        AssertState(storage.Deserialize<ConversationState>(BinaryData.FromString(today)));
    }

    /// <summary>The same with Orleans' binary storage serializer (a host may choose it): the grain calls' codec.</summary>
    [Fact]
    public void A_conversation_stored_in_Orleans_binary_loads_and_is_written_as_before()
    {
        var storage = new OrleansGrainStorageSerializer(Wire);
        var stored = File.ReadAllBytes(Fixture("conversation-state.bin"));
        AssertState(storage.Deserialize<ConversationState>(new BinaryData(stored)));
        Assert.Equal(stored, storage.Serialize(State()).ToArray());
    }

    static void AssertState(ConversationState? state)
    {
        Assert.NotNull(state);
        Assert.Equal(
            [(ChatRole.System, "Be brief."), (ChatRole.User, "Hi ünïcode ✓"), (ChatRole.Assistant, "Hello."), (ChatRole.User, "Again?"), (ChatRole.Assistant, "Yes.")],
            state.Messages.Select(m => (m.Role, m.Content)));
        Assert.Equal([1, 733, 16289, 28793, 2, int.MaxValue, 0], state.Tokens);
        Assert.Equal("S127.0.0.1:11111:123", state.KvSilo);
        Assert.Equal((6, 2, true, 1), (state.KvTokens, state.Turns, state.Created, state.DroppedTurns));
        Assert.Equal([0, 4], state.TurnStarts);
        Assert.Equal([3, 6], state.ReplyStarts);
    }

    [Fact]
    public void A_turn_chunk_reads_and_is_written_as_before()
    {
        var chunk = ReadAsBefore("token-chunk.bin", new TokenChunk
        {
            ConversationId = "conv-1", Turn = 2, Sequence = 5, Text = "Hel", TokenIds = [22557, 28723],
            End = End(), Logprobs = [Logprobs(22557), Logprobs(28723)],
        });
        Assert.Equal(("conv-1", 2, 5, "Hel"), (chunk.ConversationId, chunk.Turn, chunk.Sequence, chunk.Text));
        Assert.Equal([22557, 28723], chunk.TokenIds);
        AssertLogprobs(22557, chunk.Logprobs[0]);
        AssertLogprobs(28723, chunk.Logprobs[1]);
        var end = chunk.End!;
        Assert.Equal(FinishReason.Length, end.Finish);
        Assert.Equal((100, 64, 20, 3), (end.Usage.PromptTokens, end.Usage.CachedPromptTokens, end.Usage.CompletionTokens, end.Usage.DroppedTurns));
        Assert.Equal(("an error", "S10.0.0.2:11111:7", 12.5, 250.25, "the whole reply", true),
            (end.Error, end.Silo, end.EngineTtftMs, end.EngineElapsedMs, end.Text, end.Overloaded));
    }

    [Fact]
    public void A_conversation_snapshot_reads_and_is_written_as_before()
    {
        var snapshot = ReadAsBefore("conversation-snapshot.bin", new ConversationSnapshot
        {
            ConversationId = "conv-1",
            Messages = [new(ChatRole.System, "Be brief."), new(ChatRole.User, "Hi"), new(ChatRole.Assistant, "Hello.")],
            TokenCount = 42, Turns = 1, DroppedTurns = 1, KvSilo = "S10.0.0.2:11111:7", KvTokens = 40, TurnInProgress = 1,
            GrainSilo = "S10.0.0.1:11111:5", Exists = true,
        });
        Assert.Equal("conv-1", snapshot.ConversationId);
        Assert.Equal([(ChatRole.System, "Be brief."), (ChatRole.User, "Hi"), (ChatRole.Assistant, "Hello.")], snapshot.Messages.Select(m => (m.Role, m.Content)));
        Assert.Equal((42, 1, 1, "S10.0.0.2:11111:7", 40, (int?)1, "S10.0.0.1:11111:5", true),
            (snapshot.TokenCount, snapshot.Turns, snapshot.DroppedTurns, snapshot.KvSilo, snapshot.KvTokens, snapshot.TurnInProgress, snapshot.GrainSilo, snapshot.Exists));
    }

    [Fact]
    public void An_engine_request_and_its_chunks_read_and_are_written_as_before()
    {
        var request = ReadAsBefore("engine-request.bin", new EngineRequest
        {
            ConversationId = "conv-1", Turn = 3, PromptTokens = [1, 733, 2],
            Options = new SamplingOptions
            {
                Temperature = 0.5f, TopP = 0.9f, TopK = 40, Seed = 7, MaxTokens = 64, StopStrings = ["\n\n"], StopTokens = [13],
                IgnoreEos = true, Logprobs = 2, PromptLogprobs = 1,
            },
            RefuseIfBusy = true, Stateless = true, ContinuesPrompt = true,
        });
        Assert.Equal(("conv-1", 3, true, true, true), (request.ConversationId, request.Turn, request.RefuseIfBusy, request.Stateless, request.ContinuesPrompt));
        Assert.Equal([1, 733, 2], request.PromptTokens);
        var o = request.Options;
        Assert.Equal((0.5f, 0.9f, 40, (ulong?)7, (int?)64, true, (int?)2, (int?)1), (o.Temperature, o.TopP, o.TopK, o.Seed, o.MaxTokens, o.IgnoreEos, o.Logprobs, o.PromptLogprobs));
        Assert.Equal(["\n\n"], o.StopStrings);
        Assert.Equal([13], o.StopTokens);

        var chunk = ReadAsBefore("engine-chunk.bin", new EngineChunk
        {
            Text = "Hi", TokenIds = [22557], End = End(), OutputTokens = [22557, 28723], Logprobs = [Logprobs(22557)],
            PromptLogprobs = [null, Logprobs(733)],
        });
        Assert.Equal("Hi", chunk.Text);
        Assert.Equal([22557], chunk.TokenIds);
        Assert.Equal([22557, 28723], chunk.OutputTokens);
        AssertLogprobs(22557, Assert.Single(chunk.Logprobs));
        Assert.Null(chunk.PromptLogprobs![0]);
        AssertLogprobs(733, chunk.PromptLogprobs[1]!);
        Assert.Equal((FinishReason.Length, 100, 64, 20, 3), (chunk.End!.Finish, chunk.End.Usage.PromptTokens, chunk.End.Usage.CachedPromptTokens, chunk.End.Usage.CompletionTokens, chunk.End.Usage.DroppedTurns));
    }

    [Fact]
    public void An_engine_load_reads_and_is_written_as_before()
    {
        var load = ReadAsBefore("engine-load.bin", new EngineLoad
        {
            Silo = "S10.0.0.2:11111:7", Backend = "cuda", Model = "mixtral", Waiting = 1, Running = 2, KvBlocksUsed = 3, KvBlocksTotal = 400,
            KvBlocksCached = 5, DecodeTokensPerSecond = 215.5, LastBatchSize = 6, TokensGenerated = 7_000_000_000, PromptTokensComputed = 8,
            PromptTokensReused = 9, ResidentConversations = 10, ContextLength = 32768, KvBlockSize = 16, DeviceIndex = 1,
            DeviceName = "NVIDIA H200", State = EngineState.Loading, TimeToFirstTokenP50Ms = 39.5, TimeToFirstTokenP99Ms = 118.25,
        });
        Assert.Equal(("S10.0.0.2:11111:7", "cuda", "mixtral", 1, 2, 3, 400, 5),
            (load.Silo, load.Backend, load.Model, load.Waiting, load.Running, load.KvBlocksUsed, load.KvBlocksTotal, load.KvBlocksCached));
        Assert.Equal((215.5, 6, 7_000_000_000L, 8L, 9L, 10, 32768, 16),
            (load.DecodeTokensPerSecond, load.LastBatchSize, load.TokensGenerated, load.PromptTokensComputed, load.PromptTokensReused, load.ResidentConversations, load.ContextLength, load.KvBlockSize));
        Assert.Equal(((int?)1, "NVIDIA H200", EngineState.Loading, (double?)39.5, (double?)118.25),
            (load.DeviceIndex, load.DeviceName, load.State, load.TimeToFirstTokenP50Ms, load.TimeToFirstTokenP99Ms));
    }

    [Fact]
    public void Refusals_read_and_are_written_as_before()
    {
        var invalid = ReadAsBefore("invalid-turn.bin", new InvalidTurnException("too long", ErrorKind.ContextLengthExceeded));
        Assert.Equal(("too long", ErrorKind.ContextLengthExceeded), (invalid.Message, invalid.Kind));
        var missing = ReadAsBefore("conversation-not-found.bin", new ConversationNotFoundException("conv-9"));
        Assert.Equal("conv-9", missing.ConversationId);
        Assert.Contains("conv-9", missing.Message);
        Assert.Equal("busy", ReadAsBefore("engine-busy.bin", new EngineBusyException("busy")).Message);
        Assert.Equal("running", ReadAsBefore("turn-in-progress.bin", new TurnInProgressException("running")).Message);
    }

    /// <summary>
    /// The grain interfaces' ids and the wire names of their calls' messages: a silo or client finds a grain and a method
    /// by these, so a build that names them otherwise cannot call or serve an older one.
    /// </summary>
    [Fact]
    public void Grain_interfaces_and_calls_keep_their_wire_names()
    {
        Assert.Equal(File.ReadAllLines(Fixture("grain-calls.txt")), GrainCallNames());
    }

    /// <summary>The interfaces' ids, then the wire name of each call's message (the generated invokables), sorted.</summary>
    static string[] GrainCallNames()
    {
        var contracts = typeof(IConversationGrain).Assembly;
        var interfaces = Silo.Value.GetRequiredService<GrainInterfaceTypeResolver>();
        var types = Silo.Value.GetRequiredService<TypeConverter>();
        var ids = new[] { typeof(IConversationGrain), typeof(IEngineGrain) }.Select(t => "interface " + interfaces.GetGrainInterfaceType(t));
        var calls = contracts.GetTypes()
            .Where(t => typeof(IInvokable).IsAssignableFrom(t) && !t.IsAbstract && !t.IsInterface)
            .Select(t => "call " + types.Format(t))
            .Order(StringComparer.Ordinal);
        return [.. ids, .. calls];
    }

    /// <summary>
    /// The fixture's value, read as a grain call reads it (its wire type name included), after checking that
    /// <paramref name="expected"/> is written to exactly those bytes.
    /// </summary>
    static T ReadAsBefore<T>(string name, T expected)
    {
        var stored = File.ReadAllBytes(Fixture(name));
        Assert.Equal(stored, Wire.SerializeToArray<object>(expected!));
        return Assert.IsType<T>(Wire.Deserialize<object>(stored));
    }

    static void AssertLogprobs(int id, TokenLogprobs l)
    {
        Assert.Equal((id, -0.25f), (l.TokenId, l.Logprob));
        Assert.Equal([id, 7], l.TopTokenIds);
        Assert.Equal([-0.25f, -2.5f], l.TopLogprobs);
    }
}
