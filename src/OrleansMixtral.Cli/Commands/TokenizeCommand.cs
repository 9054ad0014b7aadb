using System.CommandLine;
using System.Text;
using System.Text.Json;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Cli.Commands;

/// <summary><c>mixtral tokenize</c>: token ids as JSON arrays, BOS first (as Hugging Face encodes with special tokens).</summary>
static class TokenizeCommand
{
    public static Command Create(CliConsole console)
    {
        var command = new Command("tokenize", "Print token ids as a JSON array (BOS first); --jsonl: one JSON string per stdin line → one array per line");
        var model = new Option<string>("--model", "-m") { Description = "Model directory (only tokenizer.json is read)", Required = true, HelpName = "DIR" };
        var jsonl = new Option<bool>("--jsonl") { Description = "Read one JSON string per stdin line, write one JSON array of ids per line" };
        var noBos = new Option<bool>("--no-bos") { Description = "Leave out the BOS token" };
        var text = new Argument<string?>("text") { Description = "Text to tokenize (default: all of stdin)", Arity = ArgumentArity.ZeroOrOne };
        command.Options.Add(model);
        command.Options.Add(jsonl);
        command.Options.Add(noBos);
        command.Arguments.Add(text);
        command.Validators.Add(r =>
        {
            if (r.GetResult(jsonl) is not null && r.GetResult(text) is { Tokens.Count: > 0 }) r.AddError("--jsonl reads stdin; give no text argument");
        });

        command.SetAction(async (r, ct) =>
        {
            MistralTokenizer tokenizer = ModelLoader.LoadTokenizer(r.GetRequiredValue(model));
            bool bos = !r.GetValue(noBos);
            var line = new StringBuilder();
            if (!r.GetValue(jsonl))
            {
                string input = r.GetValue(text) ?? await console.In.ReadToEndAsync(ct);
                WriteIds(line, tokenizer.Encode(input, bos));
                console.Out.WriteLine(line);
                return CliApp.ExitOk;
            }

            int lineNumber = 0;
            while (await console.In.ReadLineAsync(ct) is { } json)
            {
                lineNumber++;
                string? value = ParseJsonString(json, out string? problem);
                if (value is null)
                {
                    console.Out.Flush();
                    console.Error.WriteLine($"error: stdin line {lineNumber}: {problem}");
                    return CliApp.ExitError;
                }
                line.Clear();
                WriteIds(line, tokenizer.Encode(value, bos));
                console.Out.WriteLine(line);
            }
            return CliApp.ExitOk;
        });
        return command;
    }

    static string? ParseJsonString(string json, out string? problem)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(json);
            if (document.RootElement.ValueKind == JsonValueKind.String)
            {
                problem = null;
                return document.RootElement.GetString()!;
            }
            problem = $"expected a JSON string, found a JSON {document.RootElement.ValueKind.ToString().ToLowerInvariant()}";
        }
        catch (JsonException e)
        {
            problem = "not valid JSON: " + e.Message.ReplaceLineEndings(" ");
        }
        return null;
    }

    static void WriteIds(StringBuilder sb, int[] ids)
    {
        sb.Append('[');
        for (int i = 0; i < ids.Length; i++)
        {
            if (i > 0) sb.Append(',');
            sb.Append(ids[i]);
        }
        sb.Append(']');
    }
}
