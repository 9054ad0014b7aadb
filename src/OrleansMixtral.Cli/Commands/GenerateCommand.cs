using System.CommandLine;
using OrleansMixtral.Engine;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Cli.Commands;

/// <summary><c>mixtral generate</c>: one completion, streamed to stdout as it is produced; diagnostics on stderr.</summary>
static class GenerateCommand
{
    public static Command Create(CliConsole console)
    {
        var command = new Command("generate", "Complete a prompt; prints only the completion, streaming as tokens arrive");
        var model = new ModelOptions(command, prefillChunk: true);
        var prompt = new Option<string>("--prompt", "-p")
        {
            Description = "The prompt text (\"-\" reads it from stdin)",
            Required = true,
            HelpName = "TEXT",
        };
        var chat = new Option<bool>("--chat") { Description = "Wrap the prompt in the chat template as one user turn" };
        var system = new Option<string?>("--system") { Description = "With --chat: a system message before the user turn", HelpName = "TEXT" };
        command.Options.Add(prompt);
        command.Options.Add(chat);
        command.Options.Add(system);
        var sampling = new SamplingFlags(command);
        command.Validators.Add(r =>
        {
            if (r.GetResult(system) is not null && r.GetResult(chat) is null) r.AddError("--system needs --chat");
        });

        command.SetAction(async (r, ct) =>
        {
            SamplingOptions p = sampling.Get(r);
            if (p.Check() is { } bad)
            {
                console.Error.WriteLine("error: " + bad.Message);
                return CliApp.ExitUsage;
            }
            string text = r.GetRequiredValue(prompt);
            if (text == "-") text = await console.In.ReadToEndAsync(ct);

            using LoadedModel loaded = model.Load(r, console);
            MistralTokenizer tokenizer = loaded.Tokenizer;
            int[] ids;
            if (r.GetValue(chat))
            {
                var messages = new List<ChatMessage>();
                if (r.GetValue(system) is { } s) messages.Add(new ChatMessage(ChatRole.System, s));
                messages.Add(new ChatMessage(ChatRole.User, text));
                ids = tokenizer.EncodeChat(messages);
            }
            else
            {
                ids = tokenizer.Encode(text, addBos: true);
            }

            await using InferenceEngine engine = loaded.CreateEngine(model.EngineOptions(r));
            // a completion's text continues the prompt's ("The history of the city" → " is the most…"); a chat reply starts its own
            GenerationStream stream = engine.Submit(new GenerationRequest(ids, p) { ContinuesPrompt = !r.GetValue(chat) }, ct);
            GenerationResult result = await StreamOut(stream, console.Out, ct);
            if (console.OutputIsTerminal) console.Out.WriteLine();
            console.Out.Flush();
            return Report(console, result);
        });
        return command;
    }

    /// <summary>Writes each piece of text as it arrives (flushed), then returns the result.</summary>
    public static async Task<GenerationResult> StreamOut(GenerationStream stream, TextWriter output, CancellationToken ct)
    {
        try
        {
            await foreach (GeneratedToken token in stream.Tokens.ReadAllAsync(ct))
            {
                if (token.Text.Length == 0) continue;
                output.Write(token.Text);
                output.Flush();
            }
            return await stream.Completion.WaitAsync(ct);
        }
        catch (OperationCanceledException)
        {
            stream.Cancel();
            throw;
        }
    }

    /// <summary>One stderr line of figures; exit code 1 when the generation failed.</summary>
    public static int Report(CliConsole console, GenerationResult result)
    {
        if (result.FinishReason == FinishReason.Error)
        {
            console.Error.WriteLine("error: generation failed: " + result.Error);
            return CliApp.ExitError;
        }
        console.Error.WriteLine(Stats(result));
        return result.FinishReason == FinishReason.Cancelled ? CliApp.ExitInterrupted : CliApp.ExitOk;
    }

    public static string Stats(GenerationResult result)
    {
        var u = result.Usage;
        var decode = result.Elapsed - result.TimeToFirstToken;
        string rate = u.CompletionTokens > 1 && decode > TimeSpan.Zero ? $", {(u.CompletionTokens - 1) / decode.TotalSeconds:F1} tok/s" : "";
        return $"[{u.CompletionTokens} tokens ({result.FinishReason.ToString().ToLowerInvariant()}), prompt {u.PromptTokens} " +
               $"({u.CachedPromptTokens} cached), first token {Fmt.Ms(result.TimeToFirstToken)}{rate}, {result.Elapsed.TotalSeconds:F2} s]";
    }
}
