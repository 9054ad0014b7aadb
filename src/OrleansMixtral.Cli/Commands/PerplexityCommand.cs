using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using OrleansMixtral.Engine;

namespace OrleansMixtral.Cli.Commands;

/// <summary>
/// <c>mixtral perplexity</c>: the file encoded whole without BOS, cut into chunks of context − 1 tokens, each window
/// [BOS] + chunk, every token predicted once (the windowing of the Hugging Face reference).
/// </summary>
static class PerplexityCommand
{
    public static Command Create(CliConsole console)
    {
        var command = new Command("perplexity", "Perplexity of a text file (windows of [BOS] + context−1 tokens)");
        var model = new ModelOptions(command);
        var file = new Option<FileInfo>("--file", "-f") { Description = "Text file (UTF-8)", Required = true, HelpName = "TEXT" };
        var maxWindows = new Option<int?>("--max-windows") { Description = "Only the first N windows", HelpName = "N" };
        maxWindows.Validators.Add(v =>
        {
            if (Opt.TryGet(v, out int? n) && n is < 1) v.AddError("--max-windows must be at least 1");
        });
        var json = new Option<bool>("--json") { Description = "Print the result as a JSON object" };
        command.Options.Add(file);
        command.Options.Add(maxWindows);
        command.Options.Add(json);

        command.SetAction(r =>
        {
            ModelLoader.ReadConfig(model.Directory(r)); // a missing model directory is reported before a missing file
            FileInfo path = r.GetRequiredValue(file);
            if (!path.Exists) throw new CliException($"file not found: {path.FullName}");
            string text = File.ReadAllText(path.FullName);

            using LoadedModel loaded = model.Load(r, console);
            int[] ids = loaded.Tokenizer.Encode(text, addBos: false);
            if (ids.Length == 0) throw new CliException($"{path.FullName} has no tokens");
            ModelRunner runner = loaded.CreateRunner();

            int? limit = r.GetValue(maxWindows);
            var started = Stopwatch.GetTimestamp();
            // on a terminal: a bar over the windows with the time left (a full file is hundreds of windows)
            PerplexityResult result = SpectreUi.WithProgress(console, "perplexity", progress =>
                runner.Perplexity(ids, loaded.Tokenizer.BosId, limit, (done, total) => progress.Report($"window {done}/{total}", done, total)));
            double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;

            if (r.GetValue(json))
            {
                var report = new PerplexityReport(result.Perplexity, result.Tokens, result.Windows, result.NllSum,
                    loaded.Backend.Name, loaded.Name, path.FullName, ids.Length, Math.Round(seconds, 3),
                    Math.Round(result.Tokens / seconds, 1));
                console.Out.WriteLine(JsonSerializer.Serialize(report, CliJson.Options));
            }
            else
            {
                console.Out.WriteLine($"perplexity {result.Perplexity:F4} over {result.Tokens} tokens in {result.Windows} window{(result.Windows == 1 ? "" : "s")} " +
                                      $"({loaded.Backend.Name}, {seconds:F1} s, {result.Tokens / seconds:F0} tok/s)");
            }
            return CliApp.ExitOk;
        });
        return command;
    }

    sealed record PerplexityReport(
        double Perplexity, long Tokens, int Windows, double NllSum, string Backend, string Model, string File,
        int FileTokens, double Seconds, double TokensPerSecond);
}

static class CliJson
{
    // Written to files and terminals, never into HTML: keep '+', non-ASCII path characters and the like as they are.
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
    public static readonly JsonSerializerOptions Indented = new(Options) { WriteIndented = true };
}
