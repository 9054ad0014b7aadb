using System.CommandLine;
using OrleansMixtral.Client;
using OrleansMixtral.Engine;
using TurnOptions = OrleansMixtral.Grains.TurnOptions;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Cli.Commands;

/// <summary>
/// <c>mixtral chat</c>: a multi-turn conversation over stdin. The history is kept as messages and rendered with the
/// chat template each turn; the engine finds the earlier turns in its KV prefix cache and computes only what is new.
/// Each reply goes to stdout followed by a newline; prompts and figures go to stderr.
/// </summary>
static class ChatCommand
{
    public static Command Create(CliConsole console)
    {
        var command = new Command("chat", "Interactive multi-turn chat over stdin (/reset clears the history, /exit or end of input quits)");
        var model = new ModelOptions(command, required: false, prefillChunk: true);
        var system = new Option<string?>("--system") { Description = "System message for the conversation", HelpName = "TEXT" };
        var cluster = new Option<string?>("--cluster")
        {
            Description = "Chat through a running cluster instead of a local model: HOST:PORT[,HOST:PORT] of silo gateways, or redis://HOST:PORT",
            HelpName = "ADDRESS",
        };
        var conversation = new Option<string?>("--conversation") { Description = "With --cluster: resume this conversation id", HelpName = "ID" };
        var clusterId = new Option<string?>("--cluster-id")
        {
            Description = "With --cluster: the cluster's id (default: the one a silo on this machine registered for that gateway port, else mixtral)",
            HelpName = "ID",
        };
        foreach (Option o in new Option[] { system, cluster, conversation, clusterId }) command.Options.Add(o);
        command.Validators.Add(r =>
        {
            var hasModel = r.GetResult(model.Model) is not null;
            var hasCluster = r.GetResult(cluster) is not null;
            if (hasModel == hasCluster) r.AddError("give either --model DIR (a local engine) or --cluster ADDRESS (a running cluster)");
            if (r.GetResult(conversation) is not null && !hasCluster) r.AddError("--conversation needs --cluster");
            if (r.GetResult(clusterId) is not null && !hasCluster) r.AddError("--cluster-id needs --cluster");
            if (r.GetResult(model.PrefillChunkTokens) is not null && hasCluster) r.AddError("--prefill-chunk needs --model (a cluster's silos set their own)");
        });
        var sampling = new SamplingOptions(command, defaultMaxTokens: 512, defaultTemperature: 0.7f);

        command.SetAction(async (r, ct) =>
        {
            SamplingParams p = sampling.Get(r);
            p.Validate();
            string? systemText = r.GetValue(system);
            if (r.GetValue(cluster) is { } address)
            {
                var options = new TurnOptions
                {
                    MaxTokens = p.MaxTokens, Temperature = p.Temperature, TopP = p.TopP, TopK = p.TopK, Seed = p.Seed,
                    StopStrings = [.. p.StopStrings], IgnoreEos = p.IgnoreEos,
                };
                return await ClusterChat.RunAsync(address, r.GetValue(conversation), systemText, options,
                    console.In, console.Out, console.Error, console.InputIsTerminal, ct, r.GetValue(clusterId));
            }
            int context = ModelLoader.ReadConfig(model.Directory(r)).MaxPositionEmbeddings;
            // Room for the conversation so far (cached) and the next turn's new blocks.
            using LoadedModel loaded = model.Load(r, console, kvCacheTokens: 2L * context);
            await using InferenceEngine engine = loaded.CreateEngine();
            return await Repl(console, loaded.Tokenizer, engine, p, systemText, context, ct);
        });
        return command;
    }

    static async Task<int> Repl(CliConsole console, MistralTokenizer tokenizer, InferenceEngine engine, SamplingParams sampling,
        string? system, int context, CancellationToken ct)
    {
        var history = new List<ChatMessage>();
        void Reset()
        {
            history.Clear();
            if (system is not null) history.Add(new ChatMessage(ChatRole.System, system));
        }
        Reset();
        if (console.InputIsTerminal) console.Error.WriteLine("/reset clears the conversation, /exit or Ctrl+D ends it.");

        while (true)
        {
            if (console.InputIsTerminal) console.Error.Write("> ");
            string? line = await console.In.ReadLineAsync(ct);
            if (line is null) break;
            string trimmed = line.Trim();
            if (trimmed.Length == 0) continue;
            if (trimmed is "/exit" or "/quit") break;
            if (trimmed == "/reset")
            {
                Reset();
                console.Error.WriteLine("(conversation cleared)");
                continue;
            }
            if (trimmed.StartsWith('/') && !trimmed.Contains(' '))
            {
                console.Error.WriteLine($"unknown command {trimmed} (commands: /reset, /exit)");
                continue;
            }

            history.Add(new ChatMessage(ChatRole.User, line));
            int[]? ids = FitToContext(tokenizer, history, context, system is not null, console.Error);
            if (ids is null)
            {
                history.RemoveAt(history.Count - 1);
                console.Error.WriteLine($"error: that message alone does not fit the context of {context} tokens");
                continue;
            }

            GenerationStream stream = engine.Submit(new GenerationRequest(ids, sampling), ct);
            GenerationResult result = await GenerateCommand.StreamOut(stream, console.Out, ct);
            console.Out.WriteLine();
            console.Out.Flush();
            if (result.FinishReason == FinishReason.Error)
            {
                console.Error.WriteLine("error: generation failed: " + result.Error);
                return CliApp.ExitError;
            }
            console.Error.WriteLine(GenerateCommand.Stats(result));
            history.Add(new ChatMessage(ChatRole.Assistant, result.Text));
        }
        return CliApp.ExitOk;
    }

    /// <summary>
    /// The conversation's prompt ids, dropping the oldest user/assistant exchanges until it leaves room for at least one
    /// generated token; null when even the last message alone is too long.
    /// </summary>
    static int[]? FitToContext(MistralTokenizer tokenizer, List<ChatMessage> history, int context, bool hasSystem, TextWriter error)
    {
        int first = hasSystem ? 1 : 0;
        int dropped = 0;
        while (true)
        {
            int[] ids = tokenizer.EncodeChat(history);
            if (ids.Length < context)
            {
                if (dropped > 0) error.WriteLine($"(dropped the {dropped} oldest exchange{(dropped == 1 ? "" : "s")} to fit the context)");
                return ids;
            }
            if (history.Count - first <= 1) return null;
            history.RemoveRange(first, 2);
            dropped++;
        }
    }
}
