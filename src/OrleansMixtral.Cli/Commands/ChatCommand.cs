using System.CommandLine;
using OrleansMixtral.Client;
using OrleansMixtral.Engine;
using TurnOptions = OrleansMixtral.Grains.TurnOptions;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Cli.Commands;

/// <summary>
/// <c>mixtral chat</c>: a multi-turn conversation over stdin. The conversation is kept as the exact ids of its turns
/// (<see cref="ConversationWindow"/>, the cluster's context policy too); the engine finds the earlier turns in its KV
/// prefix cache and computes only what is new.
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
            Description = "Chat through a running cluster instead of a local model: HOST:PORT[,HOST:PORT] of silo gateways, redis://HOST:PORT, or postgres:NPGSQL-CONNECTION-STRING",
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
        // What the model sees of the conversation, by the cluster's context policy (exact ids; the oldest whole turns go
        // when a reply would lack room), and the user message of each turn it keeps.
        var window = ConversationWindow.Empty;
        var users = new List<string>();
        void Reset()
        {
            window = ConversationWindow.Empty;
            users.Clear();
        }
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

            TurnPrompt turn;
            try { turn = window.NextTurn(tokenizer, system, users, line, sampling.MaxTokens, context); }
            catch (ContextLengthExceededException e)
            {
                console.Error.WriteLine("error: " + e.Message);
                continue;
            }
            if (turn.NewlyDropped > 0)
                console.Error.WriteLine($"(dropped the {turn.NewlyDropped} oldest turn{(turn.NewlyDropped == 1 ? "" : "s")} to leave the reply room in the context)");

            GenerationStream stream = engine.Submit(new GenerationRequest(turn.Ids, sampling with { MaxTokens = turn.MaxTokens }), ct);
            GenerationResult result = await GenerateCommand.StreamOut(stream, console.Out, ct);
            console.Out.WriteLine();
            console.Out.Flush();
            if (result.FinishReason == FinishReason.Error)
            {
                console.Error.WriteLine("error: generation failed: " + result.Error);
                return CliApp.ExitError;
            }
            console.Error.WriteLine(GenerateCommand.Stats(result));
            window = turn.Commit(result.OutputTokens, tokenizer.EosId);
            users = [.. users.Skip(turn.NewlyDropped), line];
        }
        return CliApp.ExitOk;
    }
}
