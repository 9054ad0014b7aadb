using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using OrleansMixtral.Engine;
using OrleansMixtral.LoadBench;
using OrleansMixtral.Model;

namespace OrleansMixtral.Cli.Commands;

/// <summary>
/// <c>mixtral bench --rate R1,R2,…</c>: the load benchmark serving engines publish. At each rate, requests arrive as a
/// Poisson process (seeded exponential gaps of mean 1/rate; <see cref="ArrivalSchedule"/>), each sent at its time whatever
/// the earlier ones are doing, for <c>--requests N</c> arrivals or every arrival within <c>--duration S</c>; then the
/// run waits for the last to finish and goes to the next rate. Prompts as the concurrency bench makes them (random ids,
/// BOS first, distinct), greedy, EOS ignored. Reported per rate (<see cref="RateReport"/>): output tok/s and requests/s
/// over first send to last completion, TTFT p50/p90/p99, inter-token latency p50/p99 (the gaps between consecutive
/// tokens as the caller read them), end-to-end latency. ClusterBench runs the same load through the Orleans client.
/// </summary>
static partial class BenchCommand
{
    /// <summary>Sequences the engine runs at once under load (the engine's and the silo's default).</summary>
    const int LoadMaxRunning = 64;

    /// <summary>--rate, --requests, --duration, and what they may be combined with.</summary>
    sealed class LoadOptions
    {
        public Option<double[]> Rate { get; } = new("--rate")
        {
            Description = "Load benchmark: comma-separated arrival rates, requests per second (Poisson arrivals); excludes --concurrency",
            CustomParser = r =>
            {
                if (LoadFlags.TryParseRates(r.Tokens.Select(t => t.Value), out double[] rates, out string? error)) return rates;
                r.AddError(error!);
                return [];
            },
            HelpName = "R1,R2,...",
        };

        public Option<int> Requests { get; } = Opt.Int("--requests", LoadFlags.DefaultRequests, 1,
            "With --rate: requests sent at each rate (excludes --duration)", LoadFlags.MaxRequests);

        public Option<double?> Duration { get; } = new("--duration")
        {
            Description = "With --rate: send every arrival within this many seconds at each rate instead of a count",
            HelpName = "SECONDS",
        };

        public void AddValidators(Command command, Option<CommaList<int>> concurrency, Option<CommaList<int>> promptTokens)
        {
            Duration.Validators.Add(r =>
            {
                if (Opt.TryGet(r, out double? d) && d is { } seconds && LoadFlags.CheckDuration(seconds) is { } why) r.AddError(why);
            });
            command.Validators.Add(c =>
            {
                bool rate = c.GetResult(Rate) is not null;
                bool requests = c.GetResult(Requests) is { Implicit: false };
                OptionResult? duration = c.GetResult(Duration);
                if (!rate)
                {
                    if (requests) c.AddError("--requests needs --rate (the concurrency bench sends each level's count at once)");
                    if (duration is not null) c.AddError("--duration needs --rate");
                    return;
                }
                if (c.GetResult(concurrency) is { Implicit: false })
                    c.AddError("--rate and --concurrency are exclusive: a load at arrival rates, or requests submitted at once");
                if (requests && duration is not null) c.AddError("--requests and --duration are exclusive: give a count or a duration");
                if (c.GetResult(promptTokens) is { } p && Opt.TryGet(p, out CommaList<int>? lengths) && lengths is { Values.Length: > 1 })
                    c.AddError("--rate takes one --prompt-tokens length");
                if (c.GetResult(Rate) is { } rr && Opt.TryGet(rr, out double[]? rates) && rates is { Length: > 0 }
                    && duration is not null && Opt.TryGet(duration, out double? d) && LoadFlags.CheckArrivals(rates, d) is { } tooMany)
                    c.AddError(tooMany);
            });
        }

        public LoadSettings Settings(ParseResult r, int promptTokens, int outputTokens, int seed)
        {
            double? duration = r.GetValue(Duration);
            return new LoadSettings(r.GetRequiredValue(Rate), duration is null ? r.GetValue(Requests) : null, duration, promptTokens, outputTokens, seed);
        }
    }

    static async Task<int> RunLoad(ParseResult r, CliConsole console, ModelOptions model, LoadSettings settings, FileInfo? json, FileInfo? png, CancellationToken ct)
    {
        int prompt = settings.PromptTokens, output = settings.OutputTokens;
        MixtralConfig config = ModelLoader.ReadConfig(model.Directory(r));
        if (prompt + output > config.MaxPositionEmbeddings)
            throw new CliException($"--prompt-tokens {prompt} + --output-tokens {output} = {prompt + output} tokens exceeds the model's context of {config.MaxPositionEmbeddings}");

        // every schedule before anything loads: they say how many requests may wait at once
        double[][] schedules = settings.Rates.Select(settings.Schedule).ToArray();
        // KV cache for as many requests as the engine runs at once (16-token blocks, one spare each); the rest wait
        long perRequest = (prompt + output + 15L) / 16 * 16 + 16;
        using LoadedModel loaded = model.Load(r, console, kvCacheTokens: LoadMaxRunning * perRequest);
        EngineOptions engineOptions = model.EngineOptions(r, new EngineOptions
        {
            MaxRunningSequences = LoadMaxRunning,
            MaxWaiting = Math.Max(1024, schedules.Max(s => s.Length)),
        });
        settings = settings with
        {
            PrefillChunkTokens = loaded.Backend.PrefillChunkTokens,
            PromptTokensWhileDecoding = Math.Min(engineOptions.PromptTokensWhileDecoding ?? loaded.Backend.PrefillChunkTokens, loaded.Backend.PrefillChunkTokens),
            KvAdmission = engineOptions.Admission.ToString(),
        };
        await using InferenceEngine engine = loaded.CreateEngine(engineOptions);

        var prompts = new LoadPrompts(settings.Seed, loaded.Config.VocabSize, loaded.Tokenizer.BosId, prompt);
        var sampling = new SamplingOptions { Temperature = 0, MaxTokens = output, IgnoreEos = true };
        int next = 0; // requests of the run so far: each gets its own prompt

        // Warm-up, not measured: two requests get the JIT to its optimised code and touch every buffer once.
        console.Error.WriteLine("warming up");
        var warmup = sampling with { MaxTokens = Math.Min(output, 32) };
        await Task.WhenAll(Enumerable.Range(next, 2).Select(g => engine.Submit(new GenerationRequest(prompts.For(g), warmup), ct).ReadToEndAsync(ct: ct)));
        next += 2;

        // on a terminal a bar over every rate's requests (finished ones) with the time left; elsewhere a line per rate
        int allRequests = schedules.Sum(s => s.Length);
        var reports = await SpectreUi.WithProgressAsync(console, "load", async progress =>
        {
            var done = new List<RateReport>();
            int finished = 0;
            for (int k = 0; k < settings.Rates.Length; k++)
            {
                double rate = settings.Rates[k];
                double[] arrivals = schedules[k];
                int first = next;
                next += arrivals.Length;
                string what = string.Create(CultureInfo.InvariantCulture,
                    $"rate {rate:0.##}/s: {arrivals.Length} requests arriving over {arrivals[^1]:F1} s, {prompt} prompt + {output} output tokens each");
                if (progress.Shown)
                    progress.Report(string.Create(CultureInfo.InvariantCulture, $"rate {k + 1}/{settings.Rates.Length}: {rate:0.##}/s × {arrivals.Length}"), finished, allRequests);
                else console.Error.WriteLine(what);
                RateReport report = await LoadRunner.RunAsync(rate, arrivals, async (i, clock, token) =>
                {
                    GenerationStream stream = engine.Submit(new GenerationRequest(prompts.For(first + i), sampling), token);
                    await foreach (GeneratedToken t in stream.Tokens.ReadAllAsync(token))
                        if (t.TokenId >= 0) clock.Tokens();
                    GenerationResult result = await stream.Completion.WaitAsync(token);
                    progress.Report(null, Interlocked.Increment(ref finished), allRequests);
                    return new RequestOutcome(result.FinishReason is FinishReason.Length or FinishReason.Stop,
                        result.Usage.PromptTokens, result.Usage.CompletionTokens, result.FinishReason.ToString(), result.Error);
                }, ct);
                done.Add(report);
                if (report.Failed > 0)
                    console.Error.WriteLine($"warning: {report.Failed} of {report.Sent} requests failed, the first: {report.Requests.First(q => q.Error is not null || q.Finish == "Error").Error}");
                else if (report.Requests.Any(q => q.OutputTokens != output))
                    console.Error.WriteLine($"warning: some requests generated fewer than {output} tokens");
                finished = done.Sum(d => d.Sent); // failed requests count as done too
            }
            return done;
        });

        string title = $"{loaded.Name} on {loaded.Backend.Name}, {Environment.ProcessorCount} cores: Poisson arrivals, " +
                       $"{prompt} prompt + {output} output tokens per request";
        SpectreUi.WriteTable(console.Out, console.OutputIsTerminal, title, LoadTable.Columns, LoadTable.Rows(reports), fileWidth: 160);
        console.Out.WriteLine(LoadTable.Notes);

        GpuMemory? gpu = loaded.Backend is OrleansMixtral.Cuda.CudaMixtralBackend cuda ? GpuMemory.Of(cuda) : null;
        if (gpu is not null)
            console.Out.WriteLine($"GPU memory: {gpu.WeightBytes / 1e9:F2} GB of weights, {gpu.UsedBytes / 1e9:F2} GB used of {gpu.TotalBytes / 1e9:F2} GB");
        if (png is not null)
        {
            LoadPlot.Save(png.FullName, $"{loaded.Name} on {loaded.Backend.Name}: Poisson arrivals, {prompt} + {output} tokens per request", reports);
            console.Error.WriteLine($"wrote {png.FullName}");
        }
        if (json is not null)
        {
            var report = new LoadReport(LoadJson.Now(), MachineInfo.Current(),
                new ModelInfo(loaded.Name, loaded.Directory, loaded.Config.NumLayers, loaded.Config.NumExperts, loaded.Config.NumExpertsPerToken,
                    loaded.Config.HiddenSize, loaded.Config.MaxPositionEmbeddings, loaded.Config.VocabSize, loaded.PreQuantized),
                loaded.Backend.Name, loaded.Int8, "engine", settings, gpu, reports);
            await LoadJson.WriteAsync(json.FullName, report, ct);
            console.Error.WriteLine($"wrote {json.FullName}");
        }
        int failed = reports.Sum(x => x.Failed);
        if (failed > 0) throw new CliException($"{failed} of {reports.Sum(x => x.Sent)} requests failed (every figure above counts completed requests only)");
        return CliApp.ExitOk;
    }

    /// <summary>
    /// The JSON of a load run (<c>--rate … --json FILE</c>): the run's settings, then one entry per rate (see
    /// <see cref="RateReport"/>), each with its requests. <paramref name="Path"/> says what carried the requests ("engine":
    /// in-process; ClusterBench writes "cluster").
    /// </summary>
    sealed record LoadReport(string Date, MachineInfo Machine, ModelInfo Model, string Backend, bool Int8, string Path,
        LoadSettings Settings, GpuMemory? GpuMemory, List<RateReport> Rates);

    /// <summary>
    /// The prompt of request <c>g</c> of a run, made on demand from any thread: BOS, then ids that number the request
    /// (so no two share more than BOS with each other: nothing comes from the prefix cache), then seeded random ids, as
    /// the concurrency bench's prompts are.
    /// </summary>
    sealed class LoadPrompts(int seed, int vocab, int bos, int length)
    {
        public int[] For(int g)
        {
            var ids = new int[length];
            ids[0] = bos;
            int span = vocab - 3; // no <unk>, <s>, </s>
            var random = new Random(unchecked(seed * 1_000_003 + g));
            for (int i = 1; i < length; i++) ids[i] = 3 + random.Next(span);
            if (length > 1) ids[1] = 3 + g % span;
            if (length > 2) ids[2] = 3 + g / span % span;
            return ids;
        }
    }
}
