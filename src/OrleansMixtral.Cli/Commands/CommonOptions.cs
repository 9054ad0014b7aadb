using System.CommandLine;
using System.CommandLine.Parsing;
using OrleansMixtral.Engine;

namespace OrleansMixtral.Cli.Commands;

/// <summary>
/// The value of a comma-separated list option. Not a collection, so that help shows a default as it is typed
/// ("[default: 1,2,4,8]"; System.CommandLine writes a collection's default as "1|2|4|8", its syntax for choices).
/// </summary>
sealed record CommaList<T>(T[] Values)
{
    public override string ToString() => string.Join(",", Values.Select(v => string.Format(System.Globalization.CultureInfo.InvariantCulture, "{0}", v)));
}

/// <summary>Option builders shared by the commands (each command gets its own instances).</summary>
static class Opt
{
    public static Option<int> Int(string name, int defaultValue, int min, string description, int max = int.MaxValue)
    {
        var option = new Option<int>(name) { Description = description, DefaultValueFactory = _ => defaultValue, HelpName = "N" };
        option.Validators.Add(r =>
        {
            if (!TryGet(r, out int v)) return;
            if (v < min || v > max)
                r.AddError(max == int.MaxValue ? $"{name} must be at least {min}, got {v}" : $"{name} must be in [{min}, {max}], got {v}");
        });
        return option;
    }

    public static Option<float> Float(string name, float defaultValue, float min, float max, string description, bool minExclusive = false)
    {
        var option = new Option<float>(name) { Description = description, DefaultValueFactory = _ => defaultValue, HelpName = "X" };
        option.Validators.Add(r =>
        {
            if (!TryGet(r, out float v)) return;
            if (float.IsNaN(v) || (minExclusive ? v <= min : v < min) || v > max)
                r.AddError($"{name} must be in {(minExclusive ? "(" : "[")}{min}, {max}], got {v}");
        });
        return option;
    }

    /// <summary>The option's value, or false when it did not convert (the parser reports that error itself).</summary>
    public static bool TryGet<T>(OptionResult r, out T value)
    {
        try
        {
            value = r.GetValueOrDefault<T>();
            return true;
        }
        catch (InvalidOperationException)
        {
            value = default!;
            return false;
        }
    }

    public static Option<ulong?> Seed(string description = "Random seed for sampling (reproducible output)")
        => new("--seed") { Description = description, HelpName = "S" };
}

/// <summary>--model, --backend, --int8, --threads (and --prefill-chunk where an engine runs): what it takes to load a model.</summary>
sealed class ModelOptions
{
    public Option<string> Model { get; } = new("--model", "-m")
    {
        Description = "Model directory (config.json, model.safetensors or shards, tokenizer.json)",
        Required = true,
        HelpName = "DIR",
    };

    public Option<string> Backend { get; } = new Option<string>("--backend")
    {
        Description = "Compute backend",
        DefaultValueFactory = _ => "auto",
    }.AcceptOnlyFromAmong("auto", "cpu", "cuda");

    public Option<bool> Int8 { get; } = new("--int8")
    {
        Description = "Hold the weights as int8 (weight-only, per output channel); implied by a pre-quantized checkpoint",
    };

    public Option<int?> Threads { get; } = new("--threads")
    {
        Description = "CPU worker threads (default: one per core)",
        HelpName = "N",
    };

    public Option<int?> PrefillChunkTokens { get; } = new("--prefill-chunk")
    {
        Description = $"Prompt tokens of one request per engine step (default: {PrefillChunk.CpuDefault} on the CPU, " +
                      $"{PrefillChunk.CudaDefault} on a GPU; at most the model's context)",
        HelpName = "N",
    };

    public Option<int?> PromptBudget { get; } = new("--prompt-budget")
    {
        Description = "Prompt tokens a step carries beside running decodes (default: a whole --prefill-chunk); smaller keeps " +
                      "inter-token latency low under load, at the cost of time to first token",
        HelpName = "N",
    };

    public Option<KvAdmission> KvAdmission { get; } = new("--kv-admission")
    {
        Description = "When a waiting request starts: MaxUtilization (when its prompt fits; the newest sequence is preempted " +
                      "and resumes later if KV memory runs out) or GuaranteedNoEvict (when every running request can reach its full length)",
        DefaultValueFactory = _ => Engine.KvAdmission.MaxUtilization,
    };

    readonly bool _prefillChunk;

    /// <param name="prefillChunk">Offer --prefill-chunk (commands that run an engine).</param>
    public ModelOptions(Command command, bool required = true, bool prefillChunk = false)
    {
        Model.Required = required;
        Threads.Validators.Add(r =>
        {
            if (Opt.TryGet(r, out int? v) && v is < 1) r.AddError("--threads must be at least 1");
        });
        PrefillChunkTokens.Validators.Add(r =>
        {
            if (Opt.TryGet(r, out int? v) && v < PrefillChunk.MinTokens)
                r.AddError($"--prefill-chunk must be at least {PrefillChunk.MinTokens}, got {v}");
        });
        command.Options.Add(Model);
        command.Options.Add(Backend);
        command.Options.Add(Int8);
        command.Options.Add(Threads);
        PromptBudget.Validators.Add(r =>
        {
            if (Opt.TryGet(r, out int? v) && v < PrefillChunk.MinTokens)
                r.AddError($"--prompt-budget must be at least {PrefillChunk.MinTokens}, got {v}");
        });
        _prefillChunk = prefillChunk;
        if (prefillChunk)
        {
            command.Options.Add(PrefillChunkTokens);
            command.Options.Add(PromptBudget);
            command.Options.Add(KvAdmission);
        }
    }

    /// <summary>The engine's step and admission settings (--prompt-budget, --kv-admission) over <paramref name="options"/>.</summary>
    public EngineOptions EngineOptions(ParseResult r, EngineOptions? options = null) => (options ?? new EngineOptions()) with
    {
        PromptTokensWhileDecoding = _prefillChunk ? r.GetValue(PromptBudget) : null,
        Admission = _prefillChunk ? r.GetValue(KvAdmission) : Engine.KvAdmission.MaxUtilization,
    };

    public string Directory(ParseResult r) => r.GetRequiredValue(Model);

    public ModelLoadOptions LoadOptions(ParseResult r, long? kvCacheTokens = null) => new()
    {
        Backend = r.GetValue(Backend) switch { "cpu" => BackendKind.Cpu, "cuda" => BackendKind.Cuda, _ => BackendKind.Auto },
        Int8 = r.GetValue(Int8),
        Threads = r.GetValue(Threads),
        KvCacheTokens = kvCacheTokens,
        PrefillChunkTokens = _prefillChunk ? r.GetValue(this.PrefillChunkTokens) : null,
    };

    /// <summary>
    /// A --prefill-chunk longer than the model's context is a usage error (exit 2), found before anything loads (the
    /// lower bound is checked while parsing).
    /// </summary>
    public void CheckPrefillChunk(ParseResult r, int context)
    {
        if (_prefillChunk && r.GetValue(PrefillChunkTokens) is { } chunk && PrefillChunk.Check(chunk, context) is { } why)
            throw new CliUsageException("--prefill-chunk: " + why);
    }

    /// <summary>Loads the model; a progress bar on stderr when it is a terminal, then one line saying what was loaded.</summary>
    public LoadedModel Load(ParseResult r, CliConsole console, long? kvCacheTokens = null)
    {
        string directory = Directory(r);
        CheckPrefillChunk(r, ModelLoader.ReadConfig(directory).MaxPositionEmbeddings);
        ModelLoadOptions options = LoadOptions(r, kvCacheTokens);
        LoadedModel model = console.ErrorIsTerminal
            ? SpectreUi.WithProgress(console, "loading " + Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory))),
                progress => ModelLoader.Load(directory, options, progress))
            : ModelLoader.Load(directory, options);
        var c = model.Config;
        console.Error.WriteLine(
            $"loaded {model.Name}: {model.Backend.Name}{(model.PreQuantized ? " (pre-quantized)" : "")}, " +
            $"{c.NumLayers} layers, {c.NumExperts} experts top-{c.NumExpertsPerToken}, context {c.MaxPositionEmbeddings}, " +
            $"prefill chunk {model.Backend.PrefillChunkTokens}, " +
            $"{model.LoadTime.TotalSeconds:F2} s");
        return model;
    }
}

static class Fmt
{
    public static string Ms(TimeSpan t) => $"{t.TotalMilliseconds:F0} ms";
}
