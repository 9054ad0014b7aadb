using System.Text.Json;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cli.Tests;

/// <summary>Runs the CLI in-process over string streams.</summary>
static class Cli
{
    public sealed record Result(int ExitCode, string Out, string Err)
    {
        public string[] ErrLines => Err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Out}\n--- stderr\n{Err}";
    }

    public static string Model => RepoPaths.TinyModel;

    public static Result Run(params string[] args) => RunWithInput("", args);

    public static Result RunWithInput(string stdin, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = CliApp.Run(args, new StringReader(stdin), output, error);
        return new Result(code, output.ToString(), error.ToString());
    }
}

/// <summary>The Hugging Face transformers outputs of the tiny model (tests/fixtures/tiny-mixtral).</summary>
static class HfReference
{
    public sealed record Prompt(string Kind, string? Text, (string Role, string Content)[] Messages, int[] Ids);

    public sealed record Greedy(int Prompt, int[] Ids, string Text);

    static string Dir => Path.Combine(RepoPaths.Fixtures, "tiny-mixtral");

    public static readonly Lazy<Prompt[]> Prompts = new(() =>
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "prompts.json")));
        return doc.RootElement.GetProperty("prompts").EnumerateArray().Select(p => new Prompt(
            p.GetProperty("kind").GetString()!,
            p.GetProperty("kind").GetString() == "plain" ? p.GetProperty("text").GetString() : null,
            p.TryGetProperty("messages", out var m)
                ? m.EnumerateArray().Select(x => (x.GetProperty("role").GetString()!, x.GetProperty("content").GetString()!)).ToArray()
                : [],
            p.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray())).ToArray();
    });

    static readonly Lazy<JsonElement> Reference = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "reference.json"))).RootElement);

    public static Greedy[] GreedyContinuations => Reference.Value.GetProperty("greedy").EnumerateArray().Select(g => new Greedy(
        g.GetProperty("prompt").GetInt32(),
        g.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray(),
        g.GetProperty("text").GetString()!)).ToArray();

    public static double Perplexity(string name) =>
        Reference.Value.GetProperty("perplexity").GetProperty(name).GetProperty("perplexity").GetDouble();

    public static string HeldOutPath => Path.Combine(Dir, "heldout.txt");

    static readonly Lazy<Tokenization.MistralTokenizer> Tokenizer = new(() => Tokenization.MistralTokenizer.Load(RepoPaths.TinyModel));

    /// <summary>
    /// What <c>generate</c> prints for a greedy fixture: a plain prompt's completion continues the prompt's text, so it
    /// keeps the space its first piece starts with (Hugging Face's decode of the output alone strips it: "the sea was" →
    /// " the sea was"); a chat reply is Hugging Face's text.
    /// </summary>
    public static string GenerateOutput(Greedy g) =>
        Prompts.Value[g.Prompt].Kind == "plain" && Tokenizer.Value.IdToPiece(g.Ids[0]).StartsWith('\u2581') ? " " + g.Text : g.Text;
}
