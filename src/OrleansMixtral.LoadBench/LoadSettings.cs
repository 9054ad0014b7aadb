using System.Globalization;
using System.Text.Json.Serialization;

namespace OrleansMixtral.LoadBench;

/// <summary>
/// What a load run sends: at each rate, a Poisson schedule of <see cref="Requests"/> arrivals or of every arrival within
/// <see cref="DurationSeconds"/> (one of the two), each a prompt of <see cref="PromptTokens"/> generating exactly
/// <see cref="OutputTokens"/> (greedy, EOS ignored). <see cref="Seed"/> seeds the arrivals and the prompts.
/// </summary>
public sealed record LoadSettings(double[] Rates, int? Requests, double? DurationSeconds, int PromptTokens, int OutputTokens, int Seed)
{
    public string Arrivals => "poisson";
    public bool Greedy => true;
    public bool IgnoreEos => true;
    /// <summary>Prompt tokens per engine step, where the runner knows it (the CLI's engine).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? PrefillChunkTokens { get; init; }
    /// <summary>Prompt tokens a step carries beside running decodes (the engine's setting), where the runner knows it.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? PromptTokensWhileDecoding { get; init; }
    /// <summary>The engine's KV admission policy, where the runner knows it.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? KvAdmission { get; init; }

    /// <summary>The arrival times of <paramref name="rate"/>, seconds from the first.</summary>
    public double[] Schedule(double rate) => ArrivalSchedule.Poisson(rate, Seed, Requests, DurationSeconds);
}

/// <summary>The load flags' limits and checks, one wording for the CLI and ClusterBench.</summary>
public static class LoadFlags
{
    public const double MaxRate = 10_000;
    public const int DefaultRequests = 200;
    public const int MaxRequests = ArrivalSchedule.MaxArrivals;
    public const double MaxDurationSeconds = 86_400;
    public const int DefaultPromptTokens = 512, DefaultOutputTokens = 128, MaxTokens = 1 << 20;

    /// <summary>
    /// Comma-separated rates (requests per second): plain decimals such as 0.5,1,2 in (0, <see cref="MaxRate"/>]. Several
    /// tokens ("1 2", "1,2") add up; an empty list is an error.
    /// </summary>
    public static bool TryParseRates(IEnumerable<string> tokens, out double[] rates, out string? error)
    {
        var values = new List<double>();
        foreach (string token in tokens)
        {
            foreach (string part in token.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (!double.TryParse(part, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value) || !(value > 0) || value > MaxRate)
                {
                    (rates, error) = ([], $"--rate: '{part}' is not a rate in requests per second in (0, {MaxRate.ToString(CultureInfo.InvariantCulture)}]");
                    return false;
                }
                values.Add(value);
            }
        }
        if (values.Count == 0)
        {
            (rates, error) = ([], "--rate needs at least one rate (requests per second)");
            return false;
        }
        (rates, error) = (values.ToArray(), null);
        return true;
    }

    /// <summary>Why <paramref name="seconds"/> is no --duration; null when it is one.</summary>
    public static string? CheckDuration(double seconds) =>
        seconds > 0 && seconds <= MaxDurationSeconds ? null
            : $"--duration must be in (0, {MaxDurationSeconds.ToString(CultureInfo.InvariantCulture)}] seconds, got {seconds.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>Why --rate with --duration would make a schedule too long to hold; null when it would not.</summary>
    public static string? CheckArrivals(IEnumerable<double> rates, double? durationSeconds)
    {
        if (durationSeconds is not { } d) return null;
        double expected = rates.Max() * d;
        // the expected count plus ten standard deviations still fits
        return expected + 10 * Math.Sqrt(expected) < MaxRequests ? null
            : string.Create(CultureInfo.InvariantCulture, $"--rate {rates.Max()} for --duration {d} s means about {expected:F0} requests; at most {MaxRequests} fit one schedule");
    }
}

/// <summary>A load flag that is missing, malformed, out of range or in conflict with another.</summary>
public sealed class LoadUsageException(string message) : Exception(message);

/// <summary>
/// The load flags from a plain argument list (ClusterBench has no command-line library): --rate R1,R2,… [--requests N |
/// --duration S] [--prompt-tokens N] [--output-tokens N] [--seed S] [--json FILE] [--plot FILE.png], each with its value,
/// plus the caller's own options that take a value (returned as given) or none (flags).
/// </summary>
public sealed record LoadArguments(LoadSettings Settings, string? JsonFile, string? PlotFile, IReadOnlyDictionary<string, string?> Other)
{
    public const string Usage =
        "--rate R1,R2,... [--requests N (default 200) | --duration SECONDS] [--prompt-tokens N (default 512)] " +
        "[--output-tokens N (default 128)] [--seed S (default 0)] [--json FILE] [--plot FILE.png]";

    static readonly string[] LoadOptions = ["--rate", "--requests", "--duration", "--prompt-tokens", "--output-tokens", "--seed", "--json", "--plot"];

    /// <param name="valueOptions">The caller's options that take a value.</param>
    /// <param name="flagOptions">The caller's options that take none.</param>
    /// <exception cref="LoadUsageException">Anything wrong with the arguments.</exception>
    public static LoadArguments Parse(IReadOnlyList<string> args, IReadOnlyCollection<string> valueOptions, IReadOnlyCollection<string>? flagOptions = null)
    {
        var given = new Dictionary<string, string?>(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++)
        {
            string name = args[i];
            bool takesValue = LoadOptions.Contains(name) || valueOptions.Contains(name);
            if (!takesValue && flagOptions?.Contains(name) != true)
                throw new LoadUsageException(name.StartsWith('-') ? $"unknown option {name} in load mode" : $"unexpected argument '{name}'");
            if (given.ContainsKey(name)) throw new LoadUsageException($"{name} is given twice");
            if (!takesValue)
            {
                given[name] = null;
                continue;
            }
            if (i + 1 >= args.Count || args[i + 1].StartsWith("--", StringComparison.Ordinal)) throw new LoadUsageException($"{name} needs a value");
            given[name] = args[++i];
        }

        if (!given.TryGetValue("--rate", out string? rateText)) throw new LoadUsageException("load mode needs --rate R1,R2,...");
        if (!LoadFlags.TryParseRates([rateText!], out double[] rates, out string? error)) throw new LoadUsageException(error!);
        if (given.ContainsKey("--requests") && given.ContainsKey("--duration"))
            throw new LoadUsageException("--requests and --duration are exclusive: give a count or a duration");
        int? requests = given.ContainsKey("--duration") ? null : Int(given, "--requests", LoadFlags.DefaultRequests, 1, LoadFlags.MaxRequests);
        double? duration = null;
        if (given.TryGetValue("--duration", out string? durationText))
        {
            if (!double.TryParse(durationText, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double d))
                throw new LoadUsageException($"--duration: '{durationText}' is not a number of seconds");
            if (LoadFlags.CheckDuration(d) is { } why) throw new LoadUsageException(why);
            duration = d;
        }
        if (LoadFlags.CheckArrivals(rates, duration) is { } tooMany) throw new LoadUsageException(tooMany);
        int promptTokens = Int(given, "--prompt-tokens", LoadFlags.DefaultPromptTokens, 1, LoadFlags.MaxTokens);
        int outputTokens = Int(given, "--output-tokens", LoadFlags.DefaultOutputTokens, 1, LoadFlags.MaxTokens);
        int seed = Int(given, "--seed", 0, int.MinValue, int.MaxValue);
        string? json = File(given, "--json"), plot = File(given, "--plot");
        var other = given.Where(kv => !LoadOptions.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        return new LoadArguments(new LoadSettings(rates, requests, duration, promptTokens, outputTokens, seed), json, plot, other);
    }

    static int Int(Dictionary<string, string?> given, string name, int fallback, int min, int max)
    {
        if (!given.TryGetValue(name, out string? text)) return fallback;
        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int value) || value < min || value > max)
            throw new LoadUsageException(min == int.MinValue ? $"{name}: '{text}' is not a whole number" : $"{name}: '{text}' is not a whole number in [{min}, {max}]");
        return value;
    }

    static string? File(Dictionary<string, string?> given, string name) =>
        given.TryGetValue(name, out string? path) ? (string.IsNullOrWhiteSpace(path) ? throw new LoadUsageException($"{name} needs a file name") : path) : null;
}
