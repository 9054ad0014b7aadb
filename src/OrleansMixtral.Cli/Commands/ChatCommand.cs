using System.CommandLine;
using OrleansMixtral.Client;
using OrleansMixtral.Engine;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Cli.Commands;

/// <summary>
/// <c>mixtral chat</c>: a multi-turn conversation over stdin, with a local engine or through a cluster; the loop and its
/// commands (/help, /history, /reset, /id, /exit) are <see cref="ChatRepl"/>'s either way, and Ctrl+C during a reply
/// cancels the reply (at the prompt, it ends the chat). Locally the conversation is kept as the exact ids of its turns
/// (<see cref="ConversationWindow"/>, the cluster's context policy too); the engine finds the earlier turns in its KV
/// prefix cache and computes only what is new.
/// Each reply goes to stdout followed by a newline; prompts and figures go to stderr.
/// </summary>
static class ChatCommand
{
    public static Command Create(CliConsole console)
    {
        var command = new SelfInterruptingCommand("chat", "Interactive multi-turn chat over stdin (/help lists the commands; Ctrl+C cancels a reply)");
        var model = new ModelOptions(command, required: false, prefillChunk: true);
        var system = new Option<string?>("--system") { Description = "System message for the conversation", HelpName = "TEXT" };
        var cluster = new Option<string?>("--cluster")
        {
            Description = "Chat through a running cluster instead of a local model: localhost[:PORT], HOST:PORT[,HOST:PORT] of silo gateways, redis://HOST:PORT, or postgres:NPGSQL-CONNECTION-STRING",
            HelpName = "ADDRESS",
        };
        var conversation = new Option<string?>("--conversation") { Description = "With --cluster: resume this conversation id", HelpName = "ID" };
        var clusterId = new Option<string?>("--cluster-id")
        {
            Description = "With --cluster: the cluster's id (default: the one a silo on this machine registered for that gateway port, else mixtral)",
            HelpName = "ID",
        };
        var connectTimeout = new Option<double>("--connect-timeout")
        {
            Description = "With --cluster: seconds to wait for the cluster to answer",
            DefaultValueFactory = _ => ClusterChat.DefaultConnectTimeout.TotalSeconds,
            HelpName = "SECONDS",
        };
        connectTimeout.Validators.Add(v =>
        {
            if (Opt.TryGet(v, out double t) && !(t > 0 && t <= 3600)) v.AddError($"--connect-timeout must be in (0, 3600] seconds, got {t}");
        });
        foreach (Option o in new Option[] { system, cluster, conversation, clusterId, connectTimeout }) command.Options.Add(o);
        command.Validators.Add(r =>
        {
            var hasModel = r.GetResult(model.Model) is not null;
            var hasCluster = r.GetResult(cluster) is not null;
            if (hasModel == hasCluster) r.AddError("give either --model DIR (a local engine) or --cluster ADDRESS (a running cluster)");
            if (r.GetResult(conversation) is not null && !hasCluster) r.AddError("--conversation needs --cluster");
            if (r.GetResult(clusterId) is not null && !hasCluster) r.AddError("--cluster-id needs --cluster");
            if (r.GetResult(connectTimeout) is not null && !hasCluster) r.AddError("--connect-timeout needs --cluster");
            foreach (Option o in new Option[] { model.PrefillChunkTokens, model.PromptBudget, model.KvAdmission })
                if (r.GetResult(o) is { Implicit: false } && hasCluster) r.AddError($"{o.Name} needs --model (a cluster's silos set their own)");
        });
        var sampling = new SamplingFlags(command);

        command.SetAction(async (r, ct) =>
        {
            SamplingOptions p = sampling.Get(r);
            if (p.Check() is { } bad)
            {
                console.Error.WriteLine("error: " + bad.Message);
                return CliApp.ExitUsage;
            }
            string? systemText = r.GetValue(system);
            using var interrupts = new ChatInterrupts();
            if (r.GetValue(cluster) is { } address)
            {
                using var ctrlC = console.Interrupts.Handle(() => interrupts.Interrupt());
                return await ClusterChat.RunAsync(address, r.GetValue(conversation), systemText, p,
                    console.In, console.Out, console.Error, console.InputIsTerminal, ct, r.GetValue(clusterId),
                    TimeSpan.FromSeconds(r.GetValue(connectTimeout)), interrupts);
            }
            int context = ModelLoader.ReadConfig(model.Directory(r)).MaxPositionEmbeddings;
            // Room for the conversation so far (cached) and the next turn's new blocks.
            using LoadedModel loaded = model.Load(r, console, kvCacheTokens: 2L * context);
            await using InferenceEngine engine = loaded.CreateEngine(model.EngineOptions(r));
            // from here Ctrl+C is the chat's (while the model loads, it ends the process as usual)
            using var interrupted = console.Interrupts.Handle(() => interrupts.Interrupt());
            var session = new LocalChatSession(loaded.Tokenizer, engine, p, systemText, context, console.Error);
            if (console.InputIsTerminal) console.Error.WriteLine("local chat; /help lists the commands, Ctrl+C cancels a reply, /exit or Ctrl+D ends it.");
            return await new ChatRepl(session, console.In, console.Out, console.Error) { Prompt = console.InputIsTerminal, Interrupts = interrupts }
                .RunAsync(ct);
        });
        return command;
    }

    /// <summary>A conversation on a local engine, as the chat loop sees it.</summary>
    sealed class LocalChatSession(MistralTokenizer tokenizer, InferenceEngine engine, SamplingOptions sampling, string? system, int context,
        TextWriter notes) : IChatSession
    {
        // What the model sees of the conversation, by the cluster's context policy (exact ids; the oldest whole turns go
        // when a reply would lack room), the user message of each turn it keeps, and the whole transcript (/history).
        readonly ChatPromptBuilder _prompts = new(tokenizer, context);
        ConversationWindow _window = ConversationWindow.Empty;
        List<string> _users = [];
        readonly List<ChatMessage> _transcript = [];

        public string? ConversationId => null;

        public Task<IReadOnlyList<ChatMessage>> GetHistoryAsync(CancellationToken cancellationToken) =>
            Task.FromResult<IReadOnlyList<ChatMessage>>(system is null ? [.. _transcript] : [new(ChatRole.System, system), .. _transcript]);

        public Task ResetAsync(CancellationToken cancellationToken)
        {
            _window = ConversationWindow.Empty;
            _users = [];
            _transcript.Clear();
            return Task.CompletedTask;
        }

        public async Task<ChatTurnOutcome> SendAsync(string message, Action<string> onText, CancellationToken cancellationToken)
        {
            TurnPrompt turn;
            try { turn = _prompts.NextTurn(_window, system, _users, message, sampling.MaxTokens); }
            catch (ContextLengthExceededException e) { throw new ChatSessionException(e.Message, e); }
            if (turn.NewlyDropped > 0)
                notes.WriteLine($"(dropped the {turn.NewlyDropped} oldest turn{(turn.NewlyDropped == 1 ? "" : "s")} to leave the reply room in the context)");

            // cancelling the token cancels the sequence; the reply then ends Cancelled and stays out of the history
            GenerationStream stream = engine.Submit(new GenerationRequest(turn.Ids, sampling with { MaxTokens = turn.MaxTokens }), cancellationToken);
            GenerationResult result = await stream.ReadToEndAsync(t => { if (t.Text.Length > 0) onText(t.Text); }, CancellationToken.None);
            switch (result.FinishReason)
            {
                case FinishReason.Error:
                    return new ChatTurnOutcome("error: generation failed: " + result.Error, EndsChat: true);
                case FinishReason.Cancelled:
                    return new ChatTurnOutcome("(cancelled; the conversation is as it was before this message)");
            }
            _window = turn.Commit(result.OutputTokens, tokenizer.EosId);
            _users = [.. _users.Skip(turn.NewlyDropped), message];
            _transcript.Add(new ChatMessage(ChatRole.User, message));
            _transcript.Add(new ChatMessage(ChatRole.Assistant, result.Text));
            return new ChatTurnOutcome(GenerateCommand.Stats(result));
        }
    }
}
