using System.CommandLine;

namespace OrleansMixtral.Cli.Commands;

/// <summary>
/// --max-tokens, --temperature, --top-p, --top-k, --seed, --stop, --ignore-eos: <see cref="SamplingOptions"/> on the
/// command line, with its defaults (as over HTTP) and its one validation.
/// </summary>
sealed class SamplingFlags
{
    static readonly SamplingOptions Defaults = new();

    public Option<int?> MaxTokens { get; } = new("--max-tokens")
    {
        Description = "Most tokens to generate [default: what the context leaves]",
        HelpName = "N",
    };
    public Option<float> Temperature { get; } = Opt.Float("--temperature", Defaults.Temperature, 0f, SamplingOptions.MaxTemperature,
        "Sampling temperature (0 = greedy)");
    public Option<float> TopP { get; } = Opt.Float("--top-p", Defaults.TopP, 0f, 1f,
        "Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off, 0 = greedy)");
    public Option<int> TopK { get; } = Opt.Int("--top-k", Defaults.TopK, 0, "Keep only the K most likely tokens (0 = off)");
    public Option<ulong?> Seed { get; } = Opt.Seed();
    public Option<string[]> Stop { get; } = new("--stop")
    {
        Description = "Stop when this text is generated (not printed); repeatable",
        AllowMultipleArgumentsPerToken = true,
        Arity = ArgumentArity.OneOrMore,
        HelpName = "TEXT",
    };
    public Option<bool> IgnoreEos { get; } = new("--ignore-eos") { Description = "Keep generating past the end-of-sequence token" };

    public SamplingFlags(Command command)
    {
        MaxTokens.Validators.Add(r =>
        {
            if (Opt.TryGet(r, out int? v) && v is < 1) r.AddError($"--max-tokens must be at least 1, got {v}");
        });
        Stop.Validators.Add(r =>
        {
            if (Opt.TryGet(r, out string[]? stops) && stops?.Any(string.IsNullOrEmpty) == true) r.AddError("--stop strings must not be empty");
        });
        foreach (Option o in new Option[] { MaxTokens, Temperature, TopP, TopK, Seed, Stop, IgnoreEos }) command.Options.Add(o);
    }

    public SamplingOptions Get(ParseResult r) => Defaults with
    {
        MaxTokens = r.GetValue(MaxTokens),
        Temperature = r.GetValue(Temperature),
        TopP = r.GetValue(TopP),
        TopK = r.GetValue(TopK),
        Seed = r.GetValue(Seed),
        StopStrings = r.GetValue(Stop) ?? [],
        IgnoreEos = r.GetValue(IgnoreEos),
    };
}
