using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OrleansMixtral;
using OrleansMixtral.Client;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;
using OrleansMixtral.LoadBench;
using OrleansMixtral.Tokenization;

/// <summary>
/// ClusterBench's load mode: the load benchmark of <c>mixtral bench --rate</c> (the same seeded Poisson schedules,
/// runner, percentiles, table, JSON and plot from src/OrleansMixtral.LoadBench) with every request a turn through the
/// Orleans client: a one-silo cluster in this process with the silo's default settings (direct path with 4 ms chunks,
/// token stream published; conversation state in memory), the client connected through the silo's gateway over
/// loopback TCP. Each request is the first turn of a new conversation (started before the rate's schedule begins, not
/// timed): a user message that the chat template makes exactly --prompt-tokens long, greedy, exactly --output-tokens
/// generated. TTFT runs from the call to the first chunk with tokens; a chunk of k tokens counts k tokens then.
/// </summary>
partial class Program
{
    static readonly string[] LoadOnlyOptions = ["--rate", "--requests", "--duration", "--prompt-tokens", "--output-tokens", "--seed", "--json", "--plot"];

    /// <summary>Any load flag asks for load mode (without --rate that is a usage error, not a silent turn benchmark).</summary>
    static bool LoadModeAsked(string[] args) => args.Any(a => LoadOnlyOptions.Contains(a));

    static async Task<int> RunLoadAsync(string[] args)
    {
        LoadArguments parsed;
        int threads = 0;
        try
        {
            parsed = LoadArguments.Parse(args, ["--model", "--threads"]);
            if (parsed.Other.TryGetValue("--threads", out var t) && (!int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out threads) || threads < 0))
                throw new LoadUsageException($"--threads: '{t}' is not a whole number of threads (0: one per core)");
        }
        catch (LoadUsageException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            Console.Error.WriteLine("usage: dotnet run -c Release --project src/OrleansMixtral.ClusterBench -- " + LoadArguments.Usage +
                                    " [--threads N] [--model DIR | synthetic:mixtral-8x7b]");
            return 2;
        }
        LoadSettings settings = parsed.Settings;
        string model = parsed.Other.GetValueOrDefault("--model") ?? "models/tiny-mixtral";
        using var stop = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            stop.Cancel();
        };

        // every schedule before the model loads (an 8x7B load takes minutes)
        double[][] schedules = settings.Rates.Select(settings.Schedule).ToArray();
        var options = new MixtralSiloOptions { Model = model, Threads = threads, Storage = ConversationStorageKind.Memory };
        Console.Error.WriteLine($"starting a one-silo cluster with {model}");
        var (silo, clientHost, client) = await StartOneSiloAsync("load-bench", options);
        try
        {
            var engine = silo.Services.GetRequiredService<SiloEngineHost>();
            int context = engine.ContextLength;
            if (settings.PromptTokens + settings.OutputTokens > context)
            {
                Console.Error.WriteLine($"error: --prompt-tokens {settings.PromptTokens} + --output-tokens {settings.OutputTokens} = " +
                                        $"{settings.PromptTokens + settings.OutputTokens} tokens exceeds the model's context of {context}");
                return 1;
            }
            var messages = new LoadMessages(engine.Tokenizer, settings.Seed, settings.PromptTokens);
            var turn = new SamplingOptions { MaxTokens = settings.OutputTokens, Temperature = 0, IgnoreEos = true };
            int next = 0; // requests of the run so far: each gets its own message

            async Task<RequestOutcome> Send(string conversation, string message, RequestClock? clock, CancellationToken ct)
            {
                TurnEnd? end = null;
                await foreach (var chunk in client.SendAsync(conversation, message, turn, ct))
                {
                    if (chunk.TokenIds.Length > 0) clock?.Tokens(chunk.TokenIds.Length);
                    end = chunk.End ?? end;
                }
                return end is null ? RequestOutcome.Failed("the turn ended without a final chunk")
                    : new RequestOutcome(end.Succeeded, end.Usage.PromptTokens, end.Usage.CompletionTokens, end.Finish.ToString(), end.Error, end.EngineTtftMs);
            }

            async Task<string[]> StartConversations(int count, CancellationToken ct)
            {
                var ids = new string[count];
                for (int from = 0; from < count; from += 64)
                {
                    var batch = Enumerable.Range(from, Math.Min(64, count - from)).Select(async i => ids[i] = (await client.StartConversationAsync()).ConversationId);
                    await Task.WhenAll(batch).WaitAsync(ct);
                }
                return ids;
            }

            // Warm-up, not measured: three turns get the JIT to its optimised code on both sides of the gateway.
            Console.Error.WriteLine("warming up");
            string[] warm = await StartConversations(3, stop.Token);
            foreach (var (id, i) in warm.Select((id, i) => (id, i)))
                await Send(id, messages.For(next + i), null, stop.Token);
            next += warm.Length;

            var reports = new List<RateReport>();
            for (int k = 0; k < settings.Rates.Length; k++)
            {
                double rate = settings.Rates[k];
                double[] arrivals = schedules[k];
                int first = next;
                next += arrivals.Length;
                string[] text = Enumerable.Range(first, arrivals.Length).Select(messages.For).ToArray();
                string[] conversations = await StartConversations(arrivals.Length, stop.Token);
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"rate {rate:0.##}/s: {arrivals.Length} turns arriving over {arrivals[^1]:F1} s, {settings.PromptTokens} prompt + {settings.OutputTokens} output tokens each"));
                RateReport report = await LoadRunner.RunAsync(rate, arrivals, (i, clock, ct) => Send(conversations[i], text[i], clock, ct), stop.Token);
                reports.Add(report);
                if (report.Failed > 0)
                    Console.Error.WriteLine($"warning: {report.Failed} of {report.Sent} turns failed, the first: {report.Requests.First(q => q.Error is not null).Error}");
                if (report.Requests.FirstOrDefault(q => q.PromptTokens != settings.PromptTokens && q.Error is null) is { } odd)
                    Console.Error.WriteLine($"warning: a prompt of {odd.PromptTokens} tokens, not {settings.PromptTokens}");
            }

            string backend = engine.Engine.Info.Backend;
            string title = $"{engine.ModelName} on {backend} through the cluster, {Environment.ProcessorCount} cores: Poisson arrivals, " +
                           $"{settings.PromptTokens} prompt + {settings.OutputTokens} output tokens per turn";
            Console.WriteLine();
            Console.WriteLine(title);
            Console.WriteLine();
            Console.Write(LoadTable.Markdown(LoadTable.Columns, LoadTable.Rows(reports)));
            Console.WriteLine();
            Console.WriteLine(LoadTable.Notes + "; a turn's chunk of k tokens counts as k tokens arriving then");
            if (parsed.PlotFile is { } png)
            {
                LoadPlot.Save(png, $"{engine.ModelName} on {backend}, through the cluster: {settings.PromptTokens} + {settings.OutputTokens} tokens per turn", reports);
                Console.Error.WriteLine($"wrote {Path.GetFullPath(png)}");
            }
            if (parsed.JsonFile is { } json)
            {
                var cluster = new ClusterSetup(1, "Orleans client through the silo's gateway, loopback TCP, in the silo's process",
                    options.DirectChunkIntervalMilliseconds, options.PublishTokenStream, options.Storage.ToString(), options.MaxRunningSequences, options.KvCacheMegabytes);
                await LoadJson.WriteAsync(json, new ClusterLoadReport(LoadJson.Now(), MachineInfo.Current(), engine.ModelName, model, backend,
                    "cluster", cluster, settings, reports), stop.Token);
                Console.Error.WriteLine($"wrote {Path.GetFullPath(json)}");
            }
            int failed = reports.Sum(r => r.Failed);
            if (failed > 0)
            {
                Console.Error.WriteLine($"error: {failed} of {reports.Sum(r => r.Sent)} turns failed (every figure above counts completed turns only)");
                return 1;
            }
            return 0;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            Console.Error.WriteLine("interrupted");
            return 130;
        }
        finally
        {
            await clientHost.StopAsync();
            await silo.StopAsync();
        }
    }

    /// <summary>How the requests reached the engine (the JSON's <c>cluster</c>).</summary>
    sealed record ClusterSetup(int Silos, string Client, int DirectChunkIntervalMs, bool PublishTokenStream, string Storage, int MaxRunningSequences,
        int KvCacheMegabytes);

    /// <summary>
    /// The JSON of a load run through the cluster: the shape of <c>mixtral bench --rate --json</c> (settings, then one
    /// entry per rate) with <c>path</c> "cluster", the model as named to the silo, and the cluster's set-up.
    /// </summary>
    sealed record ClusterLoadReport(string Date, MachineInfo Machine, string Model, string ModelPath, string Backend, string Path,
        ClusterSetup Cluster, LoadSettings Settings, List<RateReport> Rates);

    /// <summary>
    /// The user message of request <c>g</c>: "Request g:" then seeded words, as many as make the chat-templated prompt
    /// exactly the asked number of tokens (BOS and [INST] … [/INST] included), so a turn costs what the engine bench's
    /// prompt of that length costs.
    /// </summary>
    sealed class LoadMessages(MistralTokenizer tokenizer, int seed, int tokens)
    {
        public string For(int g)
        {
            var random = new Random(unchecked(seed * 1_000_003 + g));
            var words = new List<string> { $"Request {g}:" };
            int Count() => tokenizer.EncodeChat([new ChatMessage(ChatRole.User, string.Join(' ', words))]).Length;
            int n = Count();
            if (n > tokens) throw new InvalidOperationException($"--prompt-tokens {tokens} is shorter than the chat template around one message ({n} tokens)");
            // the words are one token each after a space: add what is missing, then correct one word at a time
            for (int round = 0; n != tokens && round < 64; round++)
            {
                if (n < tokens)
                    for (int k = n; k < tokens; k++) words.Add(Words[random.Next(Words.Length)]);
                else words.RemoveAt(words.Count - 1);
                n = Count();
            }
            if (n != tokens) throw new InvalidOperationException($"no message of exactly {tokens} tokens for request {g} (got {n})");
            return string.Join(' ', words);
        }
    }
}
