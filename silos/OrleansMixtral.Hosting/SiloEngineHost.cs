using OrleansMixtral.Backends;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Runtime;
using OrleansMixtral.Engine;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Model;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Hosting;

/// <summary>
/// The silo's one <see cref="InferenceEngine"/> (a DI singleton, the grains' <see cref="ISiloEngine"/>): chooses the
/// backend and loads the model when the silo starts, submits turns, cancels them, and reports load. The engine's loop
/// runs on its own thread; nothing here blocks it (tokens reach the grains through the engine's channels, whose
/// continuations run on the grain's scheduler). With <see cref="MixtralSiloOptions.Engine"/> false it loads nothing and
/// never serves.
/// </summary>
public sealed partial class SiloEngineHost : ISiloEngine, ILifecycleParticipant<ISiloLifecycle>, IAsyncDisposable
{
    readonly MixtralSiloOptions _options;
    readonly ILocalSiloDetails _silo;
    readonly ILogger<SiloEngineHost> _log;
    readonly Lazy<LoadedSiloEngine> _loaded;
    readonly EngineHistograms _histograms;
    readonly ConcurrentDictionary<(string Conversation, int Turn), GenerationStream> _running = new();
    readonly ConcurrentDictionary<string, long> _resident = new(); // conversation id → last turn (Stopwatch ticks)
    int _disposed;

    public SiloEngineHost(IOptions<MixtralSiloOptions> options, ILocalSiloDetails silo, ILogger<SiloEngineHost> log, IMeterFactory meters)
    {
        _histograms = new EngineHistograms(meters);
        _options = options.Value;
        _silo = silo;
        _log = log;
        _loaded = new Lazy<LoadedSiloEngine>(LoadEngine, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>This silo's key for its engine grain: <c>SiloAddress.ToParsableString()</c>.</summary>
    public string SiloKey => _silo.SiloAddress.ToParsableString();
    public SiloAddress SiloAddress => _silo.SiloAddress;
    public InferenceEngine Engine => _loaded.Value.Engine;
    public MistralTokenizer Tokenizer => _loaded.Value.Tokenizer;
    public string ModelName => _loaded.Value.ModelName;
    /// <summary>The GPU the engine runs on (index and name), or the CPU.</summary>
    public ComputeDevice Device => _loaded.Value.Device;
    public int ContextLength => Engine.Info.ContextLength;
    public bool IsLoaded => _loaded.IsValueCreated;
    /// <summary>This silo runs an engine (<see cref="MixtralSiloOptions.Engine"/>).</summary>
    public bool RunsEngine => _options.Engine;

    void ILifecycleParticipant<ISiloLifecycle>.Participate(ISiloLifecycle lifecycle)
    {
        if (!RunsEngine) return;
        // Load before the silo joins the cluster as Active, so no turn waits for a model load.
        lifecycle.Subscribe(nameof(SiloEngineHost), ServiceLifecycleStage.ApplicationServices,
            ct => Task.Run(() => { _ = _loaded.Value; }, ct),
            async ct => await DisposeAsync());
    }

    LoadedSiloEngine LoadEngine()
    {
        var started = Stopwatch.GetTimestamp();
        LogLoading(_log, _options.Model, _options.Backend);
        var loaded = CreateEngine(_options, _histograms);
        var info = loaded.Engine.Info;
        LogLoaded(_log, loaded.ModelName, info.Backend, loaded.Device.ToString(), info.KvBlocks * info.KvBlockSize,
            Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        return loaded;
    }

    /// <summary>
    /// Builds the engine a silo with <paramref name="options"/> runs (model, backend, KV budget, threads, batching), outside
    /// any silo: the same engine, for in-process baselines.
    /// </summary>
    /// <param name="observer">Told what the engine does as it runs (the silo's histograms).</param>
    public static LoadedSiloEngine CreateEngine(MixtralSiloOptions options, IEngineObserver? observer = null)
    {
        // the CLI's loader: the right backend for this machine (CUDA when asked or, with auto, when there is a
        // GPU), a model directory or a synthetic:… model, streamed tensor by tensor
        var directory = ModelLoader.IsSynthetic(options.Model) ? options.Model : ModelPaths.Resolve(options.Model);
        var loaded = ModelLoader.Load(directory, new ModelLoadOptions
        {
            Backend = options.Backend,
            Int8 = options.Int8,
            // a CPU silo's KV budget is configured in megabytes; a GPU silo takes most of the free GPU memory
            CpuKvCacheBytes = (long)options.KvCacheMegabytes << 20,
            Threads = options.Threads > 0 ? options.Threads : null,
            PrefillChunkTokens = options.PrefillChunkTokens,
            Device = options.Device,
        });
        var engine = loaded.CreateEngine(new EngineOptions
        {
            MaxRunningSequences = options.MaxRunningSequences, MaxWaiting = Math.Max(0, options.MaxWaiting), Observer = observer,
            PromptTokensWhileDecoding = options.PromptTokensWhileDecoding, Admission = options.KvAdmission,
        });
        return new LoadedSiloEngine(engine, loaded.Tokenizer, directory, loaded.Device);
    }

    /// <summary>
    /// Why <see cref="MixtralSiloOptions.Device"/> cannot be honoured on this machine (one line naming the setting), or
    /// null: a GPU index the process does not see, or one for an engine that will run on the CPU. Cheap, for a host to
    /// check before it loads anything. A cuda backend that cannot start at all is the load's to report, as without a device.
    /// </summary>
    public static string? DeviceProblem(MixtralSiloOptions options)
    {
        var backend = options.Backend;
        if (backend == BackendKind.Cuda && !OrleansMixtral.Cuda.CudaDevice.IsAvailable(out _)) return null;
        try
        {
            ModelLoader.CheckDevice(backend, options.Device);
            return null;
        }
        catch (Exception e) when (e is BackendUnavailableException or OrleansMixtral.Cuda.CudaDeviceNotFoundException)
        {
            return $"--Mixtral:Device {options.Device}: {e.Message}";
        }
    }

    /// <summary>Why this engine should not take <paramref name="request"/> now (null: it should).</summary>
    public string? BusyReason(EngineRequest request)
    {
        if (!RunsEngine) return "this silo runs no engine";
        var s = Engine.GetStats();
        if (s.Waiting >= _options.RedirectWhenWaiting) return $"{s.Waiting} requests are waiting for admission";
        var info = Engine.Info;
        var total = Math.Min((long)request.PromptTokens.Length + (request.Options.MaxTokens ?? info.ContextLength), info.ContextLength);
        var blocks = (int)((total + info.KvBlockSize - 1) / info.KvBlockSize);
        if (s.Running > 0 && blocks > s.KvBlocksTotal - s.KvBlocksUsed)
            return $"the KV cache is full ({s.KvBlocksUsed} of {s.KvBlocksTotal} blocks in use; the request needs {blocks})";
        return null;
    }

    /// <summary>Queues a turn. Throws <see cref="InvalidTurnException"/> or <see cref="EngineBusyException"/>.</summary>
    public GenerationStream Submit(EngineRequest request)
    {
        if (!RunsEngine) throw new EngineBusyException($"silo {SiloKey} runs no engine (--Mixtral:Engine false)");
        GenerationStream stream;
        try
        {
            stream = Engine.Submit(new GenerationRequest(request.PromptTokens, request.Options) { ContinuesPrompt = request.ContinuesPrompt });
        }
        catch (InvalidRequestException e) { throw new InvalidTurnException(e.Message, e.Kind); }
        catch (EngineOverloadedException e) { throw new EngineBusyException(e.Message); }
        var key = (request.ConversationId, request.Turn);
        _running[key] = stream;
        // A conversation's KV prefix stays here for its next turn; a stateless request's is nobody's.
        if (!request.Stateless) _resident[request.ConversationId] = Stopwatch.GetTimestamp();
        _ = stream.Completion.ContinueWith(_ => _running.TryRemove(new KeyValuePair<(string, int), GenerationStream>(key, stream)),
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return stream;
    }

    public bool Cancel(string conversationId, int turn)
    {
        if (!_running.TryGetValue((conversationId, turn), out var stream)) return false;
        stream.Cancel();
        return true;
    }

    public int RunningTurns => _running.Count;

    public int ResidentConversations
    {
        get
        {
            var horizon = Stopwatch.GetTimestamp() - _options.ResidentSeconds * Stopwatch.Frequency;
            var n = 0;
            foreach (var (id, at) in _resident)
            {
                if (at >= horizon) n++;
                else _resident.TryRemove(new KeyValuePair<string, long>(id, at));
            }
            return n;
        }
    }

    public EngineLoad GetLoad()
    {
        if (!RunsEngine) return new EngineLoad { Silo = SiloKey, State = EngineState.None, Backend = "none", Waiting = int.MaxValue / 2 };
        if (!IsLoaded) return new EngineLoad { Silo = SiloKey, State = EngineState.Loading, Backend = "loading", Waiting = int.MaxValue / 2 };
        var s = Engine.GetStats();
        var info = Engine.Info;
        return new EngineLoad
        {
            Silo = SiloKey,
            State = EngineState.Ready,
            Backend = s.Backend,
            Model = ModelName,
            Waiting = s.Waiting,
            Running = s.Running,
            KvBlocksUsed = s.KvBlocksUsed,
            KvBlocksTotal = s.KvBlocksTotal,
            KvBlocksCached = s.KvBlocksCached,
            DecodeTokensPerSecond = s.DecodeTokensPerSecond,
            LastBatchSize = s.LastBatchSize,
            TokensGenerated = s.TokensGenerated,
            PromptTokensComputed = s.PromptTokensComputed,
            PromptTokensReused = s.PromptTokensReused,
            ResidentConversations = ResidentConversations,
            ContextLength = info.ContextLength,
            KvBlockSize = info.KvBlockSize,
            DeviceIndex = Device.Index,
            DeviceName = Device.Name,
            TimeToFirstTokenP50Ms = s.TimeToFirstTokenP50Ms,
            TimeToFirstTokenP99Ms = s.TimeToFirstTokenP99Ms,
        };
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_loaded.IsValueCreated)
        {
            LogStopping(_log, _running.Count);
            await _loaded.Value.Engine.DisposeAsync();
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Loading the model {Model} (backend {Backend})")]
    static partial void LogLoading(ILogger log, string model, BackendKind backend);

    [LoggerMessage(Level = LogLevel.Information, Message = "Engine ready: {Model} on {Backend}, {Device}, KV cache {KvTokens} tokens, loaded in {Milliseconds:F0} ms")]
    static partial void LogLoaded(ILogger log, string model, string backend, string device, int kvTokens, double milliseconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Stopping the engine ({Running} turns running)")]
    static partial void LogStopping(ILogger log, int running);
}

/// <summary>The engine a silo with given options runs, with what it was built from and runs on.</summary>
public sealed record LoadedSiloEngine(InferenceEngine Engine, MistralTokenizer Tokenizer, string Directory, ComputeDevice Device)
{
    /// <summary>The model's name: its directory's (or the synthetic model's).</summary>
    public string ModelName => Path.GetFileName(Directory.TrimEnd(Path.DirectorySeparatorChar));
}

/// <summary>
/// The grains' <see cref="ITokenizerService"/>: the loaded engine's tokenizer and context, or, on a silo without an
/// engine, the model directory's tokenizer.json and config.json (no weights read).
/// </summary>
public sealed class ModelTokenizerService(SiloEngineHost engine, IOptions<MixtralSiloOptions> options) : ITokenizerService
{
    readonly Lazy<(MistralTokenizer Tokenizer, int ContextLength)> _files = new(() =>
    {
        var directory = ModelLoader.IsSynthetic(options.Value.Model) ? options.Value.Model : ModelPaths.Resolve(options.Value.Model);
        return (ModelLoader.LoadTokenizer(directory), ModelLoader.ReadConfig(directory).MaxPositionEmbeddings);
    });

    public MistralTokenizer Tokenizer => engine.RunsEngine ? engine.Tokenizer : _files.Value.Tokenizer;
    public int ContextLength => engine.RunsEngine ? engine.ContextLength : _files.Value.ContextLength;
}
