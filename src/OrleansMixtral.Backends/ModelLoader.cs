using System.Diagnostics;
using OrleansMixtral.Cuda;
using OrleansMixtral.Engine;
using OrleansMixtral.Engine.Cpu;
using OrleansMixtral.Model;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Backends;

/// <summary>How <see cref="ModelLoader"/> builds a backend.</summary>
public sealed record ModelLoadOptions
{
    public BackendKind Backend { get; init; } = BackendKind.Auto;

    /// <summary>Hold the weights as int8 (weight-only, per output channel). Implied by a pre-quantized checkpoint.</summary>
    public bool Int8 { get; init; }

    /// <summary>
    /// Tokens of KV cache to hold (all sequences together). Null: one full context. Never less than one full
    /// context plus a block, so a request of any length and <see cref="ModelRunner"/> always fit.
    /// </summary>
    public long? KvCacheTokens { get; init; }

    /// <summary>Worker threads of the CPU backend; null = one per core.</summary>
    public int? Threads { get; init; }

    /// <summary>
    /// Prompt tokens per engine step (chunked prefill); null = the backend's default (<see cref="PrefillChunk.CpuDefault"/>,
    /// <see cref="PrefillChunk.CudaDefault"/>). The backend's forward size follows from it. At least
    /// <see cref="PrefillChunk.MinTokens"/>, at most the model's context.
    /// </summary>
    public int? PrefillChunkTokens { get; init; }

    /// <summary>
    /// The GPU of the CUDA backend: its index among the devices this process sees (<c>CUDA_VISIBLE_DEVICES</c>, when set,
    /// numbers the ones it lists from 0). Must be 0 when the model runs on the CPU. See <see cref="ModelLoader.CheckDevice"/>.
    /// </summary>
    public int Device { get; init; }

    /// <summary>KV cache budget in bytes for the CPU backend (overrides <see cref="KvCacheTokens"/> there); the CUDA backend takes most of the free GPU memory unless <see cref="KvCacheTokens"/> is set.</summary>
    public long? CpuKvCacheBytes { get; init; }
}

/// <summary>The requested backend does not exist in this build, or cannot run on this machine as asked.</summary>
public sealed class BackendUnavailableException(string message) : Exception(message);

/// <summary>What a model runs on: a GPU, by its index among the devices the process sees and its name, or the CPU.</summary>
public sealed record ComputeDevice(int? Index, string Name)
{
    public static ComputeDevice Cpu { get; } = new(null, "cpu");

    public bool IsGpu => Index is not null;

    /// <summary>"GPU 1 (NVIDIA H200)" or "the CPU".</summary>
    public override string ToString() => Index is { } i ? $"GPU {i} ({Name})" : "the CPU";
}

/// <summary>
/// Loads a Hugging Face Mixtral directory (config.json, safetensors weights, tokenizer.json) into a tokenizer and a
/// backend ready for an <see cref="InferenceEngine"/> or a <see cref="ModelRunner"/>. No console I/O: progress goes
/// through a <see cref="LoadProgress"/> callback, so a server can use this as the CLI does.
/// </summary>
public static class ModelLoader
{
    /// <summary>config.json of a model directory, without touching the weights (cheap: for checks before a load).</summary>
    /// <exception cref="ModelFormatException">The directory or its config.json is missing or invalid.</exception>
    public static MixtralConfig ReadConfig(string directory)
    {
        if (IsSynthetic(directory)) return SyntheticConfig(directory);
        string full = RequireDirectory(directory);
        return MixtralConfig.Load(Path.Combine(full, CheckpointDirectory.ConfigFileName));
    }

    /// <summary>The tokenizer of a model directory.</summary>
    /// <exception cref="ModelFormatException">The directory does not exist.</exception>
    /// <exception cref="TokenizerFormatException">tokenizer.json is missing or invalid.</exception>
    public static MistralTokenizer LoadTokenizer(string directory)
    {
        if (IsSynthetic(directory)) return MistralTokenizer.Load(BundledTokenizerPath());
        string full = RequireDirectory(directory);
        string path = Path.Combine(full, "tokenizer.json");
        if (!File.Exists(path)) throw new TokenizerFormatException(path, "file not found");
        return MistralTokenizer.Load(path);
    }

    /// <summary>
    /// Opens the checkpoint, builds the backend (streaming tensor by tensor, reporting through
    /// <paramref name="progress"/>) and loads the tokenizer at the same time on another thread.
    /// </summary>
    /// <exception cref="ModelFormatException">The directory, config or weights are missing or invalid.</exception>
    /// <exception cref="TokenizerFormatException">tokenizer.json is missing or invalid.</exception>
    /// <exception cref="BackendUnavailableException">The backend asked for is not in this build, or a GPU index was given for a model on the CPU.</exception>
    /// <exception cref="CudaDeviceNotFoundException">The GPU index is not one of the devices this process sees.</exception>
    public static LoadedModel Load(string directory, ModelLoadOptions? options = null, LoadProgress? progress = null)
    {
        options ??= new ModelLoadOptions();
        var cuda = UsesCuda(options.Backend);
        if (options.Backend == BackendKind.Cuda && !CudaDevice.IsAvailable(out var why))
            throw new BackendUnavailableException($"the cuda backend cannot start here: {why}");
        if (IsSynthetic(directory) && !cuda)
            throw new BackendUnavailableException("synthetic models are generated on the GPU; no CUDA device here");
        CheckDevice(options.Backend, options.Device);
        if (options.PrefillChunkTokens is { } chunk && PrefillChunk.Check(chunk, ReadConfig(directory).MaxPositionEmbeddings) is { } badChunk)
            throw new ArgumentException(badChunk);
        if (cuda) return LoadCuda(directory, options, progress);
        string full = RequireDirectory(directory);
        var started = Stopwatch.GetTimestamp();

        // The tokenizer (≈0.2 s of JSON and BPE tables) loads while the weights stream in.
        Task<MistralTokenizer> tokenizerTask = Task.Run(() => LoadTokenizer(full));
        IModelBackend? backend = null;
        try
        {
            bool int8, preQuantized;
            using (CheckpointDirectory checkpoint = CheckpointDirectory.Open(full))
            {
                MixtralConfig c = checkpoint.Config;
                preQuantized = checkpoint.Quantization is not null;
                int8 = options.Int8 || preQuantized;
                var defaults = new CpuBackendOptions();
                int blockSize = defaults.KvBlockSize;
                long bytesPerToken = 2L * c.NumLayers * c.KvDim * sizeof(float);
                long tokens = Math.Max(options.CpuKvCacheBytes is { } bytes ? bytes / bytesPerToken : options.KvCacheTokens ?? 0,
                    c.MaxPositionEmbeddings + (long)blockSize);
                tokens = (tokens + blockSize - 1) / blockSize * blockSize;
                backend = new CpuMixtralBackend(checkpoint, defaults with
                {
                    Weights = int8 ? CpuWeightFormat.Int8 : CpuWeightFormat.Float32,
                    KvCacheBytes = tokens * bytesPerToken,
                    Threads = options.Threads ?? defaults.Threads,
                    PrefillChunkTokens = options.PrefillChunkTokens ?? defaults.PrefillChunkTokens,
                }, progress);
            }
            MistralTokenizer tokenizer = tokenizerTask.GetAwaiter().GetResult();
            if (tokenizer.VocabSize != backend.Config.VocabSize)
                throw new ModelFormatException(full, null,
                    $"tokenizer.json has {tokenizer.VocabSize} tokens but config.json's vocab_size is {backend.Config.VocabSize}");
            return new LoadedModel(full, tokenizer, backend, int8, preQuantized, Stopwatch.GetElapsedTime(started), ComputeDevice.Cpu);
        }
        catch
        {
            backend?.Dispose();
            tokenizerTask.ContinueWith(t => _ = t.Exception, TaskScheduler.Default); // observed either way
            throw;
        }
    }

    /// <summary>
    /// Throws unless <paramref name="device"/> is a device <paramref name="backend"/> can run on here: for the CUDA
    /// backend one of the GPUs this process sees (<see cref="CudaDevice.CheckOrdinal"/>); for the CPU only 0, since a GPU
    /// index for a model that will run on the CPU (no GPU here, or <c>cpu</c> asked for) is a mistake, not a preference.
    /// Cheap: no context is created, nothing loads.
    /// </summary>
    /// <exception cref="BackendUnavailableException">The cuda backend cannot start here, or a GPU index for the CPU.</exception>
    /// <exception cref="CudaDeviceNotFoundException">No such GPU (a negative index never is one).</exception>
    public static void CheckDevice(BackendKind backend, int device)
    {
        if (device < 0) throw new CudaDeviceNotFoundException(device, CudaDevice.Count());
        if (backend == BackendKind.Cuda && !CudaDevice.IsAvailable(out var why))
            throw new BackendUnavailableException($"the cuda backend cannot start here: {why}");
        if (UsesCuda(backend))
        {
            CudaDevice.CheckOrdinal(device);
            return;
        }
        if (device == 0) return;
        CudaDevice.IsAvailable(out var none);
        var reason = backend == BackendKind.Cpu ? "the cpu backend was asked for" : "no CUDA device here: " + none;
        throw new BackendUnavailableException($"device {device} is the index of a GPU, but the model runs on the CPU ({reason}); leave the device at 0");
    }

    /// <summary>Whether <paramref name="backend"/> resolves to the CUDA backend on this machine.</summary>
    public static bool UsesCuda(BackendKind backend) =>
        backend == BackendKind.Cuda || (backend == BackendKind.Auto && CudaDevice.IsAvailable(out _));

    /// <summary><c>synthetic:mixtral-8x7b</c>, <c>…-bf16</c> or <c>synthetic:tiny</c>: random weights made on the GPU, for benchmarks.</summary>
    public static bool IsSynthetic(string model) => model.StartsWith("synthetic:", StringComparison.Ordinal);

    public static MixtralConfig SyntheticConfig(string model) => model["synthetic:".Length..] switch
    {
        "mixtral-8x7b" or "mixtral-8x7b-bf16" => MixtralConfig.Mixtral8x7B,
        "tiny" => MixtralConfig.Mixtral8x7B with
        {
            HiddenSize = 128, IntermediateSize = 256, NumLayers = 4, NumHeads = 4, NumKvHeads = 2, HeadDim = 32,
            MaxPositionEmbeddings = 1024, TieWordEmbeddings = true,
        },
        _ => throw new ModelFormatException(model, null, "unknown synthetic model; use synthetic:mixtral-8x7b, synthetic:mixtral-8x7b-bf16 or synthetic:tiny"),
    };

    static LoadedModel LoadCuda(string directory, ModelLoadOptions options, LoadProgress? progress)
    {
        var started = Stopwatch.GetTimestamp();
        var synthetic = IsSynthetic(directory);
        var full = synthetic ? directory : RequireDirectory(directory);
        Task<MistralTokenizer> tokenizerTask = Task.Run(() => LoadTokenizer(full));
        var device = CudaDevice.Open(options.Device);
        CudaMixtralBackend? backend = null;
        try
        {
            var config = synthetic ? SyntheticConfig(directory) : ReadConfig(full);
            long bytesPerToken = 2L * config.NumLayers * config.KvDim * 2;
            var cudaOptions = new CudaBackendOptions
            {
                // synthetic models are int8 unless named …-bf16 (the study's fp16 baseline, on one card that holds 94 GB)
                Weights = options.Int8 || (synthetic && !directory.EndsWith("-bf16", StringComparison.Ordinal)) ? CudaWeightFormat.Int8 : CudaWeightFormat.BFloat16,
                KvCacheBytes = options.KvCacheTokens is { } t ? Math.Max(t, config.MaxPositionEmbeddings + 16L) * bytesPerToken : null,
                PrefillChunkTokens = options.PrefillChunkTokens ?? PrefillChunk.CudaDefault,
                Device = options.Device,
            };
            bool preQuantized = false;
            if (synthetic) backend = CudaMixtralBackend.Synthetic(device, config, cudaOptions, progress: progress);
            else
            {
                using var checkpoint = CheckpointDirectory.Open(full);
                preQuantized = checkpoint.Quantization is not null;
                if (preQuantized) cudaOptions = cudaOptions with { Weights = CudaWeightFormat.Int8 };
                backend = CudaMixtralBackend.Load(device, checkpoint, cudaOptions, progress);
            }
            var tokenizer = tokenizerTask.GetAwaiter().GetResult();
            return new LoadedModel(full, tokenizer, backend, cudaOptions.Weights == CudaWeightFormat.Int8, preQuantized, Stopwatch.GetElapsedTime(started),
                new ComputeDevice(device.Ordinal, device.Name));
        }
        catch
        {
            backend?.Dispose();
            tokenizerTask.ContinueWith(t => _ = t.Exception, TaskScheduler.Default);
            throw;
        }
    }

    /// <summary>models/tiny-mixtral/tokenizer.json (the real Mistral vocabulary), looked up from here and from the program.</summary>
    static string BundledTokenizerPath()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var path = Path.Combine(dir.FullName, "models", "tiny-mixtral", "tokenizer.json");
                if (File.Exists(path)) return path;
            }
        throw new TokenizerFormatException("models/tiny-mixtral/tokenizer.json", "not found (synthetic models use the bundled Mistral tokenizer)");
    }

    static string RequireDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string full = Path.GetFullPath(directory);
        if (!Directory.Exists(full)) throw new ModelFormatException(full, null, "model directory not found");
        return full;
    }
}

/// <summary>A tokenizer and a backend loaded from one model directory.</summary>
public sealed class LoadedModel : IDisposable
{
    bool _backendHandedOff;

    internal LoadedModel(string directory, MistralTokenizer tokenizer, IModelBackend backend, bool int8, bool preQuantized, TimeSpan loadTime, ComputeDevice device)
    {
        Device = device;
        Directory = directory;
        Tokenizer = tokenizer;
        Backend = backend;
        Int8 = int8;
        PreQuantized = preQuantized;
        LoadTime = loadTime;
    }

    public string Directory { get; }
    /// <summary>The directory's name, e.g. "tiny-mixtral".</summary>
    public string Name => Path.GetFileName(Directory.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
    public MistralTokenizer Tokenizer { get; }
    public IModelBackend Backend { get; }
    public MixtralConfig Config => Backend.Config;
    public bool Int8 { get; }
    /// <summary>The checkpoint on disk is int8 already (quantization_config in config.json).</summary>
    public bool PreQuantized { get; }
    public TimeSpan LoadTime { get; }
    /// <summary>The GPU the weights live on, or the CPU.</summary>
    public ComputeDevice Device { get; }

    /// <summary>An engine over the backend; the engine owns the backend from now on (disposing it disposes the backend).</summary>
    public InferenceEngine CreateEngine(EngineOptions? options = null)
    {
        _backendHandedOff = true;
        return new InferenceEngine(Backend, Tokenizer, options);
    }

    /// <summary>A runner over the backend (never together with an engine on the same backend).</summary>
    public ModelRunner CreateRunner() => new(Backend);

    public void Dispose()
    {
        if (!_backendHandedOff) Backend.Dispose();
    }
}
