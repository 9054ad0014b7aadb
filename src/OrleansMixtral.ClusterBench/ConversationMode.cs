using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OrleansMixtral;
using OrleansMixtral.Backends;
using OrleansMixtral.Client;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.LoadBench;

/// <summary>
/// ClusterBench's conversation mode, against a running cluster (<c>--cluster</c>, e.g. the silos of the host launcher):
/// <c>--concurrency C</c> clients, each running conversations of <c>--turns T</c> turns back to back (closed loop) until
/// <c>--duration</c> has passed. The first turn is a chat-templated prompt of exactly <c>--prompt-tokens</c>, the next
/// ones short follow-ups; each reply is exactly <c>--output-tokens</c> long (greedy, EOS ignored). Reports aggregate
/// throughput and TTFT; for T &gt; 1 the KV affinity: how many follow-up turns ran on the silo of the turn before (where
/// the conversation's prefix is) and how much of the history the engine's prefix cache gave back. With
/// <c>--kill-pid PID --kill-at S</c> it kills that process (SIGKILL: a silo, from the launcher's status file) S seconds
/// into the run and reports what the clients saw: failed turns (each retried on the same conversation), the longest wait
/// for a reply, which silos took the turns after it. At the end every conversation's stored history is compared with
/// what the clients saw succeed.
/// </summary>
partial class Program
{
    static readonly string[] ConversationValueOptions =
    [
        "--cluster", "--cluster-id", "--concurrency", "--duration", "--turns", "--prompt-tokens", "--follow-up-words", "--output-tokens",
        "--seed", "--warmup", "--stall-check-ms", "--retry-for", "--model", "--kill-pid", "--kill-at", "--json", "--label",
    ];

    const string ConversationUsage =
        "dotnet run -c Release --project src/OrleansMixtral.ClusterBench -- --cluster HOST:PORT[,HOST:PORT...] [--cluster-id ID] " +
        "--concurrency C [--duration SECONDS (default 30)] [--turns T (default 1)] [--prompt-tokens N (default 512)] [--follow-up-words N (default 24)] " +
        "[--output-tokens N (default 128)] [--seed S] [--warmup TURNS (default C)] [--stall-check-ms MS (default 750)] [--retry-for SECONDS (default 60)] " +
        "[--model DIR | synthetic:mixtral-8x7b (its tokenizer and context)] [--kill-pid PID --kill-at SECONDS] [--json FILE] [--label TEXT]";

    /// <summary>Between attempts at one user message (a failed turn leaves the history as it was; the client sends it again).</summary>
    static readonly TimeSpan RetryPause = TimeSpan.FromMilliseconds(250);

    static bool ConversationModeAsked(string[] args) => args.Contains("--concurrency");

    sealed record ConversationSettings(string Cluster, string? ClusterId, int Concurrency, double DurationSeconds, int Turns, int PromptTokens,
        int FollowUpWords, int OutputTokens, int Seed, int Warmup, int StallCheckMs, double RetryForSeconds, string Model, int? KillPid, double? KillAtSeconds,
        string? Label);

    static ConversationSettings ParseConversationArguments(string[] args)
    {
        var given = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i++)
        {
            if (!ConversationValueOptions.Contains(args[i]))
                throw new LoadUsageException(args[i].StartsWith('-') ? $"unknown option {args[i]} with --concurrency" : $"unexpected argument '{args[i]}'");
            if (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal)) throw new LoadUsageException($"{args[i]} needs a value");
            if (!given.TryAdd(args[i], args[i + 1])) throw new LoadUsageException($"{args[i]} is given twice");
            i++;
        }
        int Int(string name, int fallback, int min, int max)
        {
            if (!given.TryGetValue(name, out var text)) return fallback;
            return int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max ? v
                : throw new LoadUsageException($"{name}: '{text}' is not a whole number in [{min}, {max}]");
        }
        double Seconds(string name, double fallback)
        {
            if (!given.TryGetValue(name, out var text)) return fallback;
            return double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v) && v > 0 && v <= 86_400 ? v
                : throw new LoadUsageException($"{name}: '{text}' is not a number of seconds in (0, 86400]");
        }
        if (!given.TryGetValue("--cluster", out var cluster)) throw new LoadUsageException("--concurrency runs against a cluster: give --cluster HOST:PORT[,HOST:PORT...]");
        if (given.ContainsKey("--kill-pid") != given.ContainsKey("--kill-at")) throw new LoadUsageException("--kill-pid and --kill-at go together");
        if (given.ContainsKey("--kill-at") && Seconds("--kill-at", 0) >= Seconds("--duration", 30))
            throw new LoadUsageException("--kill-at must come before the end of --duration");
        var concurrency = Int("--concurrency", 1, 1, 4096);
        return new ConversationSettings(cluster, given.GetValueOrDefault("--cluster-id"), concurrency, Seconds("--duration", 30), Int("--turns", 1, 1, 1000),
            Int("--prompt-tokens", LoadFlags.DefaultPromptTokens, 1, LoadFlags.MaxTokens), Int("--follow-up-words", 24, 1, 100_000),
            Int("--output-tokens", LoadFlags.DefaultOutputTokens, 1, LoadFlags.MaxTokens), Int("--seed", 0, int.MinValue, int.MaxValue),
            Int("--warmup", concurrency, 0, 100_000), Int("--stall-check-ms", 750, 50, 600_000), Seconds("--retry-for", 60),
            given.GetValueOrDefault("--model") ?? "models/tiny-mixtral",
            given.ContainsKey("--kill-pid") ? Int("--kill-pid", 0, 1, int.MaxValue) : null,
            given.ContainsKey("--kill-at") ? Seconds("--kill-at", 0) : null, given.GetValueOrDefault("--label"));
    }

    /// <summary>One attempt at one user message, as its client saw it (times in seconds from the run's start, or ms).</summary>
    sealed record TurnRecord(int Client, string Conversation, int Turn, int Attempt, double SentAtSeconds, double? TtftMs, double EndToEndMs,
        bool Succeeded, string? Silo, int PromptTokens, int CachedPromptTokens, int OutputTokens, string? Error)
    {
        public double? FirstTokenAtSeconds => TtftMs is { } t ? SentAtSeconds + t / 1000 : null;
        public double DoneAtSeconds => SentAtSeconds + EndToEndMs / 1000;
    }

    sealed record EngineDevice(string Silo, string Backend, int? DeviceIndex, string DeviceName);

    sealed record SiloShare(string Silo, int Turns, int OutputTokens);

    sealed record ConversationSummary(double WallSeconds, int Messages, int Answered, int Attempts, int FailedAttempts, int OutputTokens,
        double OutputTokensPerSecond, double TurnsPerSecond, Latency? TtftMs, Latency? FirstTurnTtftMs, Latency? FollowUpTtftMs, Latency? EndToEndMs,
        List<SiloShare> PerSilo);

    /// <param name="FollowUps">Answered turns after a conversation's first whose previous turn was answered too (before the fault, if any).</param>
    /// <param name="SameSilo">Of those, how many ran on the silo of the turn before (where the conversation's KV prefix is).</param>
    /// <param name="HistoryTokens">Their previous turns' prompt + reply tokens: what a prefix cache could give back.</param>
    /// <param name="CachedPromptTokens">What the engines' prefix caches gave back of their prompts.</param>
    sealed record Affinity(int FollowUps, int SameSilo, double SameSiloRate, long HistoryTokens, long CachedPromptTokens, double CachedShare);

    /// <param name="AffectedMessages">Messages whose first attempt was in flight at the kill or sent after it.</param>
    /// <param name="LongestReplyWaitMs">The longest time from a message's first send to its reply's first token, over those (retries included).</param>
    /// <param name="LongestErrorMs">The longest a failed attempt took to end with its error.</param>
    /// <param name="TurnsAfterKill">Answered turns first sent after the kill, by silo.</param>
    /// <param name="FirstReplyAfterKillMs">From the kill to the first token of the first turn sent after it.</param>
    sealed record FaultReport(int ProcessId, double AtSeconds, List<string> SilosGone, int FailedAttempts, int AffectedMessages, int Unanswered,
        double? LongestReplyWaitMs, double? LongestErrorMs, Dictionary<string, int> TurnsAfterKill, double? FirstReplyAfterKillMs, List<string> Errors);

    sealed record HistoryCheck(int Conversations, int Intact, List<string> Broken);

    sealed record ConversationReport(string Date, MachineInfo Machine, string? Label, string Model, string Cluster, string? ClusterId,
        List<EngineDevice> EnginesBefore, List<EngineDevice> EnginesAfter, ConversationSettings Settings, ConversationSummary Summary, Affinity? Affinity,
        FaultReport? Fault, HistoryCheck Histories, List<TurnRecord> Turns);

    static async Task<int> RunConversationsAsync(string[] args)
    {
        ConversationSettings s;
        string? jsonFile;
        try
        {
            s = ParseConversationArguments(args);
            jsonFile = args.SkipWhile(a => a != "--json").Skip(1).FirstOrDefault();
        }
        catch (LoadUsageException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            Console.Error.WriteLine("usage: " + ConversationUsage);
            return 2;
        }
        using var stop = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            stop.Cancel();
        };

        // the tokenizer and context of the model the cluster serves (a synthetic model's are the bundled tokenizer's and 8x7B's)
        var tokenizer = ModelLoader.LoadTokenizer(s.Model);
        var context = ModelLoader.ReadConfig(s.Model).MaxPositionEmbeddings;
        var followUpTokens = s.FollowUpWords + 16; // "Turn k:" and the [INST] … [/INST] around it, generously
        var longest = s.PromptTokens + s.Turns * (s.OutputTokens + 1) + (s.Turns - 1) * followUpTokens;
        if (longest > context)
        {
            Console.Error.WriteLine($"error: a conversation of {s.Turns} turns ({s.PromptTokens} prompt, {s.OutputTokens} output and about {followUpTokens} follow-up tokens a turn) " +
                                    $"reaches about {longest} tokens, past the model's context of {context}");
            return 1;
        }

        Console.Error.WriteLine($"connecting to {s.Cluster}");
        using var host = await ClusterConnection.ConnectAsync(s.Cluster, TimeSpan.FromSeconds(60), clusterId: s.ClusterId, logLevel: LogLevel.Error,
            cancellationToken: stop.Token);
        // The stall check the gateway uses (half its 1.5 s cluster-call budget), so a killed silo costs a client what it costs the gateway's.
        var client = new MixtralClient(host.Services.GetRequiredService<IClusterClient>())
        {
            Watchdog = WatchdogTimes.FromMilliseconds(s.StallCheckMs, s.StallCheckMs),
        };
        var before = await EnginesAsync(client);
        Console.Error.WriteLine($"{before.Count} engine(s): " + string.Join("; ", before.Select(e => $"{e.Silo} {e.Backend} on {(e.DeviceIndex is { } d ? $"GPU {d} ({e.DeviceName})" : "the CPU")}")));
        var messages = new LoadMessages(tokenizer, s.Seed, s.PromptTokens);
        var turn = new SamplingOptions { MaxTokens = s.OutputTokens, Temperature = 0, IgnoreEos = true };
        var nextMessage = 0;
        string FirstMessage() => messages.For(Interlocked.Increment(ref nextMessage));
        string FollowUp(int k)
        {
            var random = new Random(unchecked(s.Seed * 7919 + Interlocked.Increment(ref nextMessage)));
            return $"Turn {k}: " + string.Join(' ', Enumerable.Range(0, s.FollowUpWords).Select(_ => Words[random.Next(Words.Length)]));
        }

        try
        {
            if (s.Warmup > 0)
            {
                // not measured: the JIT on both sides, and on a GPU the CUDA graphs of the batch sizes the run will use
                Console.Error.WriteLine($"warming up: {s.Warmup} first turns, {Math.Min(s.Warmup, s.Concurrency)} at a time");
                using var gate = new SemaphoreSlim(s.Concurrency);
                await Task.WhenAll(Enumerable.Range(0, s.Warmup).Select(async w =>
                {
                    await gate.WaitAsync(stop.Token);
                    try
                    {
                        var id = (await client.StartConversationAsync()).ConversationId;
                        await foreach (var chunk in client.SendAsync(id, FirstMessage(), turn, stop.Token)) { }
                    }
                    finally { gate.Release(); }
                }));
            }

            Console.Error.WriteLine($"{s.Concurrency} clients, conversations of {s.Turns} turn(s), for {s.DurationSeconds:0.#} s" +
                                    (s.KillPid is { } p ? $"; process {p} killed at {s.KillAtSeconds:0.#} s" : ""));
            var records = new ConcurrentBag<TurnRecord>();
            var expected = new ConcurrentDictionary<string, List<(string User, string Reply)>>();
            var started = Stopwatch.GetTimestamp();
            double Now() => Stopwatch.GetElapsedTime(started).TotalSeconds;
            double? killedAt = null;
            var killer = s.KillPid is { } pid ? Task.Run(async () =>
            {
                await Task.Delay(TimeSpan.FromSeconds(s.KillAtSeconds!.Value), stop.Token);
                using var victim = Process.GetProcessById(pid);
                victim.Kill(); // SIGKILL: no goodbye to the cluster
                killedAt = Now();
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"killed process {pid} at {killedAt:F2} s"));
            }) : Task.CompletedTask;

            async Task RunClient(int c)
            {
                while (Now() < s.DurationSeconds && !stop.IsCancellationRequested)
                {
                    string id;
                    try { id = (await client.StartConversationAsync().WaitAsync(TimeSpan.FromSeconds(10), stop.Token)).ConversationId; }
                    catch (Exception e) when (e is not OperationCanceledException || !stop.IsCancellationRequested)
                    {
                        await Task.Delay(200, stop.Token); // a silo going away under the start: try another conversation
                        continue;
                    }
                    var seen = expected[id] = [];
                    for (int k = 1; k <= s.Turns && Now() < s.DurationSeconds; k++)
                    {
                        var message = k == 1 ? FirstMessage() : FollowUp(k);
                        TurnRecord? answered = null;
                        var firstSent = Now();
                        // again and again, as a user would, until answered or --retry-for has passed since the first send
                        for (int attempt = 1; answered is null && (attempt == 1 || Now() - firstSent < s.RetryForSeconds); attempt++)
                        {
                            if (attempt > 1) await Task.Delay(RetryPause, stop.Token);
                            var (record, reply) = await SendTurnAsync(client, c, id, k, attempt, message, turn, Now, stop.Token);
                            records.Add(record);
                            if (record.Succeeded)
                            {
                                answered = record;
                                seen.Add((message, reply));
                            }
                        }
                        if (answered is null) break; // given up: the next conversation
                    }
                }
            }

            await Task.WhenAll(Enumerable.Range(0, s.Concurrency).Select(RunClient));
            try { await killer; }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException) { Console.Error.WriteLine($"warning: could not kill process {s.KillPid}: {e.Message}"); }
            var after = await EnginesAsync(client);

            Console.Error.WriteLine($"checking {expected.Count} conversations' stored histories");
            var histories = await CheckHistoriesAsync(client, expected);
            var all = records.OrderBy(r => r.SentAtSeconds).ToList();
            var report = new ConversationReport(LoadJson.Now(), MachineInfo.Current(), s.Label, Path.GetFileName(s.Model.TrimEnd('/')), s.Cluster, s.ClusterId,
                before, after, s, Summarize(all), AffinityOf(all, killedAt), s.KillPid is { } killed && killedAt is { } at ? FaultOf(all, killed, at, before, after) : null,
                histories, all);
            PrintConversationReport(report);
            if (jsonFile is not null)
            {
                await LoadJson.WriteAsync(jsonFile, report, CancellationToken.None);
                Console.Error.WriteLine($"wrote {Path.GetFullPath(jsonFile)}");
            }
            return histories.Broken.Count == 0 && report.Summary.Answered > 0 ? 0 : 1;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            Console.Error.WriteLine("interrupted");
            return 130;
        }
    }

    static async Task<(TurnRecord Record, string Reply)> SendTurnAsync(MixtralClient client, int c, string id, int k, int attempt, string message,
        SamplingOptions turn, Func<double> now, CancellationToken stop)
    {
        var sentAt = now();
        var sent = Stopwatch.GetTimestamp();
        long first = 0;
        TurnEnd? end = null;
        string? error = null;
        // A bound of its own on top of the client's stall checks: no client of the run waits forever.
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(stop);
        bound.CancelAfter(TimeSpan.FromMinutes(2));
        try
        {
            await foreach (var chunk in client.SendAsync(id, message, turn, bound.Token))
            {
                if (first == 0 && chunk.TokenIds.Length > 0) first = Stopwatch.GetTimestamp();
                end = chunk.End ?? end;
            }
        }
        catch (Exception e) when (!stop.IsCancellationRequested)
        {
            error = e.GetType().Name + ": " + FirstLine(e.Message);
        }
        var e2e = Stopwatch.GetElapsedTime(sent).TotalMilliseconds;
        var ok = error is null && end is { Succeeded: true };
        error ??= ok ? null : FirstLine(end?.Error ?? "the turn ended without a final chunk");
        var record = new TurnRecord(c, id, k, attempt, Math.Round(sentAt, 6), first != 0 ? Math.Round(Stopwatch.GetElapsedTime(sent, first).TotalMilliseconds, 3) : null,
            Math.Round(e2e, 3), ok, end?.Silo, end?.Usage.PromptTokens ?? 0, end?.Usage.CachedPromptTokens ?? 0, end?.Usage.CompletionTokens ?? 0,
            ok ? null : error);
        return (record, end?.Text ?? "");
    }

    /// <summary>An error's first line, its varying numbers (retry delays) written as N so that equal errors group.</summary>
    static string FirstLine(string message)
    {
        var line = message.Split('\n', 2)[0].Trim();
        return System.Text.RegularExpressions.Regex.Replace(line.Length > 300 ? line[..300] + "…" : line, @"after \d+(\.\d+)?ms", "after N ms");
    }

    static async Task<List<EngineDevice>> EnginesAsync(MixtralClient client)
    {
        try
        {
            var loads = await client.GetEngineLoadsAsync().WaitAsync(TimeSpan.FromSeconds(15));
            return [.. loads.OrderBy(l => l.Silo, StringComparer.Ordinal).Select(l => new EngineDevice(l.Silo, l.Backend, l.DeviceIndex, l.DeviceName))];
        }
        catch (Exception) // a cluster half gone: no engine to name
        {
            return [];
        }
    }

    /// <summary>
    /// Each conversation's stored messages against the turns its client saw succeed, in order: the same user messages and
    /// replies. A conversation whose grain was on a killed silo answers once the cluster has declared that silo dead: each
    /// is asked again for up to a minute.
    /// </summary>
    static async Task<HistoryCheck> CheckHistoriesAsync(MixtralClient client, IReadOnlyDictionary<string, List<(string User, string Reply)>> expected)
    {
        var deadline = Stopwatch.GetTimestamp() + 60 * Stopwatch.Frequency;
        async Task<ConversationSnapshot> Read(string id)
        {
            while (true)
            {
                try { return await client.GetHistoryAsync(id).WaitAsync(TimeSpan.FromSeconds(10)); }
                catch (Exception) when (Stopwatch.GetTimestamp() < deadline) { await Task.Delay(500); }
            }
        }
        var broken = new ConcurrentBag<string>();
        using var gate = new SemaphoreSlim(32);
        await Task.WhenAll(expected.Select(async kv =>
        {
            await gate.WaitAsync();
            try
            {
                var snapshot = await Read(kv.Key);
                var messages = snapshot.Messages.Where(m => m.Role != ChatRole.System).ToList();
                var want = kv.Value.SelectMany(t => new[] { new ChatMessage(ChatRole.User, t.User), new ChatMessage(ChatRole.Assistant, t.Reply) }).ToList();
                if (snapshot.Turns != kv.Value.Count || !messages.SequenceEqual(want))
                {
                    var first = Enumerable.Range(0, Math.Min(messages.Count, want.Count)).FirstOrDefault(i => messages[i] != want[i], -1);
                    broken.Add($"{kv.Key}: {snapshot.Turns} turns stored, {kv.Value.Count} answered" + (first >= 0 ? $"; message {first} differs" : ""));
                }
            }
            catch (Exception e)
            {
                broken.Add($"{kv.Key}: {e.GetType().Name}: {FirstLine(e.Message)}");
            }
            finally { gate.Release(); }
        }));
        return new HistoryCheck(expected.Count, expected.Count - broken.Count, [.. broken.Order().Take(20)]);
    }

    static ConversationSummary Summarize(List<TurnRecord> all)
    {
        var ok = all.Where(r => r.Succeeded).ToList();
        var wall = all.Count == 0 ? 0 : all.Max(r => r.DoneAtSeconds) - all.Min(r => r.SentAtSeconds);
        var messages = all.Select(r => (r.Conversation, r.Turn)).Distinct().Count();
        var outputTokens = ok.Sum(r => r.OutputTokens);
        var perSilo = ok.GroupBy(r => r.Silo ?? "?").OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => new SiloShare(g.Key, g.Count(), g.Sum(r => r.OutputTokens))).ToList();
        return new ConversationSummary(Math.Round(wall, 3), messages, ok.Count, all.Count, all.Count - ok.Count, outputTokens,
            wall > 0 ? Math.Round(outputTokens / wall, 3) : 0, wall > 0 ? Math.Round(ok.Count / wall, 4) : 0,
            Latency.Of(ok.Where(r => r.TtftMs is not null).Select(r => r.TtftMs!.Value)),
            Latency.Of(ok.Where(r => r.Turn == 1 && r.TtftMs is not null).Select(r => r.TtftMs!.Value)),
            Latency.Of(ok.Where(r => r.Turn > 1 && r.TtftMs is not null).Select(r => r.TtftMs!.Value)),
            Latency.Of(ok.Select(r => r.EndToEndMs)), perSilo);
    }

    /// <summary>Follow-up turns against the turn before them in the same conversation; before the kill only, if there was one (both silos live).</summary>
    static Affinity? AffinityOf(List<TurnRecord> all, double? killedAt)
    {
        var answered = all.Where(r => r.Succeeded).ToDictionary(r => (r.Conversation, r.Turn));
        var pairs = answered.Values.Where(r => r.Turn > 1 && answered.ContainsKey((r.Conversation, r.Turn - 1)))
            .Select(r => (This: r, Before: answered[(r.Conversation, r.Turn - 1)]))
            .Where(p => killedAt is not { } k || p.This.DoneAtSeconds < k)
            .ToList();
        if (pairs.Count == 0) return null;
        var same = pairs.Count(p => p.This.Silo == p.Before.Silo);
        long history = pairs.Sum(p => (long)p.Before.PromptTokens + p.Before.OutputTokens), cached = pairs.Sum(p => (long)p.This.CachedPromptTokens);
        return new Affinity(pairs.Count, same, Math.Round((double)same / pairs.Count, 4), history, cached, history > 0 ? Math.Round((double)cached / history, 4) : 0);
    }

    static FaultReport FaultOf(List<TurnRecord> all, int pid, double killedAt, List<EngineDevice> before, List<EngineDevice> after)
    {
        var failed = all.Where(r => !r.Succeeded).ToList();
        var affected = all.GroupBy(r => (r.Conversation, r.Turn))
            .Select(g => (First: g.MinBy(r => r.Attempt)!, Answer: g.FirstOrDefault(r => r.Succeeded)))
            .Where(m => m.First.DoneAtSeconds >= killedAt) // in flight at the kill, or sent after it
            .ToList();
        var waits = affected.Where(m => m.Answer?.FirstTokenAtSeconds is not null)
            .Select(m => (m.Answer!.FirstTokenAtSeconds!.Value - m.First.SentAtSeconds) * 1000).ToList();
        var afterKill = all.Where(r => r.Succeeded && r.Attempt == 1 && r.SentAtSeconds >= killedAt).ToList();
        var firstReply = afterKill.Where(r => r.FirstTokenAtSeconds is not null).Select(r => r.FirstTokenAtSeconds!.Value).DefaultIfEmpty().Min();
        return new FaultReport(pid, Math.Round(killedAt, 3), [.. before.Select(e => e.Silo).Except(after.Select(e => e.Silo))], failed.Count, affected.Count,
            affected.Count(m => m.Answer is null), waits.Count > 0 ? Math.Round(waits.Max(), 3) : null,
            failed.Count > 0 ? Math.Round(failed.Max(r => r.EndToEndMs), 3) : null,
            afterKill.GroupBy(r => r.Silo ?? "?").ToDictionary(g => g.Key, g => g.Count()),
            afterKill.Count > 0 ? Math.Round((firstReply - killedAt) * 1000, 3) : null,
            [.. failed.GroupBy(r => r.Error ?? "").OrderByDescending(g => g.Count()).Take(5).Select(g => $"{g.Count()}× {g.Key}")]);
    }

    static void PrintConversationReport(ConversationReport r)
    {
        var m = r.Summary;
        string F(double? v, int digits = 1) => v is { } x ? x.ToString("F" + digits, CultureInfo.InvariantCulture) : "–";
        Console.WriteLine();
        Console.WriteLine($"{r.Label ?? "run"}: {r.Model} through {r.EnginesBefore.Count} silo(s), {r.Settings.Concurrency} clients, " +
                          $"{r.Settings.Turns} turn(s) a conversation, {r.Settings.PromptTokens} prompt + {r.Settings.OutputTokens} output tokens");
        Console.WriteLine();
        Console.Write(LoadTable.Markdown(
            ["turns", "failed", "out tok/s", "turns/s", "TTFT p50", "TTFT p99", "E2E p50", "E2E p99", "same silo", "cached share", "histories intact", "wall s"],
            [[
                $"{m.Answered}", $"{m.FailedAttempts}", F(m.OutputTokensPerSecond), F(m.TurnsPerSecond, 2), F(m.TtftMs?.P50), F(m.TtftMs?.P99),
                F(m.EndToEndMs?.P50), F(m.EndToEndMs?.P99),
                r.Affinity is { } a ? $"{a.SameSilo}/{a.FollowUps} ({a.SameSiloRate * 100:F1} %)" : "–",
                r.Affinity is { } c ? $"{c.CachedShare * 100:F1} %" : "–",
                $"{r.Histories.Intact}/{r.Histories.Conversations}", F(m.WallSeconds, 2),
            ]]));
        Console.WriteLine("per silo: " + string.Join(", ", m.PerSilo.Select(p => $"{p.Silo} {p.Turns} turns, {p.OutputTokens} tokens")));
        if (r.Fault is { } f)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"kill -9 of process {f.ProcessId} at {f.AtSeconds:F2} s (silo {string.Join(", ", f.SilosGone.DefaultIfEmpty("?"))}): {f.FailedAttempts} failed attempts, " +
                $"{f.Unanswered} of {f.AffectedMessages} affected messages unanswered, longest wait for a reply {F(f.LongestReplyWaitMs, 0)} ms, " +
                $"longest failure {F(f.LongestErrorMs, 0)} ms, first reply to a turn sent after it {F(f.FirstReplyAfterKillMs, 0)} ms after the kill; " +
                $"turns sent after it ran on: {string.Join(", ", f.TurnsAfterKill.Select(kv => $"{kv.Key} {kv.Value}"))}"));
            foreach (var e in f.Errors) Console.WriteLine("  " + e);
        }
        foreach (var broken in r.Histories.Broken) Console.WriteLine("history broken: " + broken);
        Console.WriteLine("latencies in ms over answered turns, from the moment each was sent; out tok/s and turns/s over first send to last reply; " +
                          "same silo = follow-up turns on the silo of the turn before (before the kill, if any); cached share = prompt tokens the prefix cache gave back over the history before each follow-up");
    }
}
