using System.CommandLine;
using OrleansMixtral.Engine;

namespace OrleansMixtral.Cli.Commands;

/// <summary>--max-tokens, --temperature, --top-p, --top-k, --seed, --stop, --ignore-eos.</summary>
sealed class SamplingOptions
{
    public Option<int> MaxTokens { get; }
    public Option<float> Temperature { get; }
    public Option<float> TopP { get; } = Opt.Float("--top-p", 1f, 0f, 1f, "Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off)", minExclusive: true);
    public Option<int> TopK { get; } = Opt.Int("--top-k", 0, 0, "Keep only the K most likely tokens (0 = off)");
    public Option<ulong?> Seed { get; } = Opt.Seed();
    public Option<string[]> Stop { get; } = new("--stop")
    {
        Description = "Stop when this text is generated (not printed); repeatable",
        AllowMultipleArgumentsPerToken = true,
        Arity = ArgumentArity.OneOrMore,
        HelpName = "TEXT",
    };
    public Option<bool> IgnoreEos { get; } = new("--ignore-eos") { Description = "Keep generating past the end-of-sequence token" };

    public SamplingOptions(Command command, int defaultMaxTokens, float defaultTemperature)
    {
        MaxTokens = Opt.Int("--max-tokens", defaultMaxTokens, 1, "Most tokens to generate");
        Temperature = Opt.Float("--temperature", defaultTemperature, 0f, 100f, "Sampling temperature (0 = greedy)");
        Stop.Validators.Add(r =>
        {
            if (Opt.TryGet(r, out string[]? stops) && stops?.Any(string.IsNullOrEmpty) == true) r.AddError("--stop strings must not be empty");
        });
        foreach (Option o in new Option[] { MaxTokens, Temperature, TopP, TopK, Seed, Stop, IgnoreEos }) command.Options.Add(o);
    }

    public SamplingParams Get(ParseResult r) => new()
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
