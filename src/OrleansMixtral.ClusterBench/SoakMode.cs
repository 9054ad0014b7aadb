using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OrleansMixtral.LoadBench;

/// <summary>
/// ClusterBench's soak mode (<c>ClusterBench soak</c>): N concurrent multi-turn conversations through the OpenAI-compatible
/// gateway for a duration, as its users would hold them, checking everything they get:
/// <list type="bullet">
/// <item>every stream: HTTP 200, well-formed events, the assistant role first, one id, no text after the finish reason,
/// finish "length" with exactly max_tokens tokens (EOS ignored), the usage event, [DONE] last;</item>
/// <item>every stored history: after its last turn each conversation's messages (GET /v1/conversations/{id}) must be
/// exactly what its client sent and received, turn by turn; then the client starts a new conversation;</item>
/// <item>each failure by type (HTTP status and code, stream error events, broken streams, transport errors, history
/// mismatches); a refused or failed turn is sent again after a pause (its history is unchanged: the turn is not in it).</item>
/// </list>
/// Every interval (a minute by default) it prints and records the interval's turns, failures, TTFT and inter-token
/// latency percentiles, and the resident memory (RSS) of each watched process: the gateway and the silos of the cluster
/// that run on this machine (the processes listening on the gateway's port and on the silo ports its /health lists), and
/// any given by --watch PID or --watch-name; at the end a summary, and all of it as JSON.
/// </summary>
partial class Program
{
    const string SoakUsage =
        "dotnet run -c Release --project src/OrleansMixtral.ClusterBench -- soak [--gateway http://127.0.0.1:8000] [--api-key KEY] " +
        "[--conversations 16] [--duration 120s|30m] [--turns 6] [--max-tokens 48] [--report-every 60s] [--watch PID,...] " +
        "[--watch-name TEXT-IN-COMMAND-LINE,...] [--seed 1] [--json FILE]";

    static bool SoakModeAsked(string[] args) => args is ["soak", ..];

    sealed record SoakSettings(Uri Gateway, string? ApiKey, int Conversations, TimeSpan Duration, int Turns, int MaxTokens,
        TimeSpan ReportEvery, int[] WatchPids, string[] WatchNames, ulong Seed, string? Json);

    static async Task<int> RunSoakAsync(string[] args)
    {
        SoakSettings settings;
        try { settings = ParseSoak(args); }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            Console.Error.WriteLine("usage: " + SoakUsage);
            return 2;
        }
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = settings.Conversations + 4, PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            BaseAddress = settings.Gateway,
            Timeout = TimeSpan.FromMinutes(5),
        };
        if (settings.ApiKey is { } key) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        string model;
        try { model = await ServedModelAsync(http); }
        catch (Exception e)
        {
            Console.Error.WriteLine($"error: the gateway at {settings.Gateway} does not answer GET /v1/models: {e.Message}");
            return 1;
        }
        var soak = new Soak(settings, http, model);
        return await soak.RunAsync();
    }

    static SoakSettings ParseSoak(string[] args)
    {
        var values = new Dictionary<string, string>();
        for (var i = 1; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
                throw new ArgumentException($"'{args[i]}' is not an option with a value");
            values[args[i]] = args[++i];
        }
        string[] known = ["--gateway", "--api-key", "--conversations", "--duration", "--turns", "--max-tokens", "--report-every", "--watch", "--watch-name", "--seed", "--json"];
        if (values.Keys.FirstOrDefault(k => !known.Contains(k)) is { } unknown) throw new ArgumentException($"unknown option {unknown}");
        int Int(string name, int fallback, int min)
        {
            if (!values.TryGetValue(name, out var text)) return fallback;
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v) || v < min) throw new ArgumentException($"{name}: '{text}' is not a whole number of at least {min}");
            return v;
        }
        TimeSpan Time(string name, TimeSpan fallback)
        {
            if (!values.TryGetValue(name, out var text)) return fallback;
            var unit = text[^1] switch { 'h' => 3600.0, 'm' => 60.0, 's' => 1.0, _ => 0 };
            var number = unit > 0 ? text[..^1] : text;
            if (!double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v) || v <= 0)
                throw new ArgumentException($"{name}: '{text}' is not a duration (90, 90s, 30m, 1h)");
            return TimeSpan.FromSeconds(v * (unit > 0 ? unit : 1));
        }
        var gateway = values.GetValueOrDefault("--gateway", "http://127.0.0.1:8000");
        if (!Uri.TryCreate(gateway, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new ArgumentException($"--gateway: '{gateway}' is not an http(s) URL");
        var pids = values.TryGetValue("--watch", out var w)
            ? w.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p =>
                int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? pid : throw new ArgumentException($"--watch: '{p}' is not a process id")).ToArray()
            : [];
        var names = values.GetValueOrDefault("--watch-name", "")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var seedText = values.GetValueOrDefault("--seed", "1");
        if (!ulong.TryParse(seedText, NumberStyles.None, CultureInfo.InvariantCulture, out var seed)) throw new ArgumentException($"--seed: '{seedText}' is not a whole number");
        return new SoakSettings(uri, values.GetValueOrDefault("--api-key"), Int("--conversations", 16, 1), Time("--duration", TimeSpan.FromSeconds(120)),
            Int("--turns", 6, 1), Int("--max-tokens", 48, 2), Time("--report-every", TimeSpan.FromSeconds(60)), pids, names, seed, values.GetValueOrDefault("--json"));
    }

    static async Task<string> ServedModelAsync(HttpClient http)
    {
        using var doc = JsonDocument.Parse(await http.GetStringAsync("/v1/models"));
        return doc.RootElement.GetProperty("data")[0].GetProperty("id").GetString()!;
    }

    /// <summary>One soak run: the conversations' loops, the interval reports, the summary.</summary>
    sealed class Soak(SoakSettings settings, HttpClient http, string model)
    {
        readonly Stopwatch _clock = new();
        readonly Lock _lock = new();
        Window _window = new();
        readonly Window _total = new();
        readonly List<JsonObject> _intervals = [];
        readonly Dictionary<int, (string Label, List<double> RssMb)> _memory = [];

        /// <summary>What happened in one interval (or in the whole run).</summary>
        sealed class Window
        {
            public int TurnsOk, TurnsFailed, HistoriesVerified, HistoryMismatches, Conversations;
            public long Tokens;
            public readonly List<double> Ttft = [], Itl = [];
            public readonly Dictionary<string, int> Errors = [];
        }

        void Record(Action<Window> change)
        {
            lock (_lock)
            {
                change(_window);
                change(_total);
            }
        }

        void Error(string type) => Record(w => w.Errors[type] = w.Errors.GetValueOrDefault(type) + 1);

        public async Task<int> RunAsync()
        {
            Console.WriteLine($"soak: {settings.Conversations} conversations of {settings.Turns} turns × {settings.MaxTokens} tokens through {settings.Gateway} " +
                              $"(model {model}) for {settings.Duration}, a report every {settings.ReportEvery}");
            _clock.Start();
            var until = DateTime.UtcNow + settings.Duration;
            using var stop = new CancellationTokenSource();
            SampleMemory(); // the starting point
            var reporter = ReportLoopAsync(stop.Token);
            var workers = Enumerable.Range(0, settings.Conversations).Select(i => Task.Run(() => ConversationsAsync(i, until))).ToArray();
            await Task.WhenAll(workers);
            stop.Cancel();
            await reporter;
            Report(final: true);
            return Summarize();
        }

        async Task ReportLoopAsync(CancellationToken ct)
        {
            try
            {
                while (true)
                {
                    await Task.Delay(settings.ReportEvery, ct);
                    Report(final: false);
                }
            }
            catch (OperationCanceledException) { }
        }

        /// <summary>A client that holds conversations one after another until the end: each of Turns turns, then verified.</summary>
        async Task ConversationsAsync(int client, DateTime until)
        {
            var random = new Random(unchecked((int)settings.Seed * 7919 + client));
            for (var number = 0; DateTime.UtcNow < until; number++)
            {
                string? id = null;
                var transcript = new List<(string Role, string Content)>();
                for (var turn = 0; turn < settings.Turns && DateTime.UtcNow < until; turn++)
                {
                    var message = $"Client {client}, conversation {number}, turn {turn}: tell me about the {Topics[random.Next(Topics.Length)]}.";
                    // A turn that failed is sent again (the conversation's history does not have it), until it succeeds or time is up.
                    while (DateTime.UtcNow < until)
                    {
                        var (ok, conversation, reply, retryAfter) = await TurnAsync(id, message, (ulong)random.NextInt64());
                        id ??= conversation;
                        if (ok)
                        {
                            transcript.Add(("user", message));
                            transcript.Add(("assistant", reply!));
                            break;
                        }
                        await Task.Delay(retryAfter ?? TimeSpan.FromMilliseconds(250));
                    }
                }
                if (id is not null && transcript.Count > 0) await VerifyHistoryAsync(id, transcript);
                Record(w => w.Conversations++);
            }
        }

        static readonly string[] Topics = ["old city", "river", "harbour", "market", "bridge", "lighthouse", "mountain road", "library", "winter", "festival"];

        /// <summary>One streamed turn, checked; false (and the failure recorded by type) unless all of it was right.</summary>
        async Task<(bool Ok, string? Conversation, string? Reply, TimeSpan? RetryAfter)> TurnAsync(string? conversation, string message, ulong seed)
        {
            var body = JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["model"] = model,
                ["messages"] = new[] { new Dictionary<string, string> { ["role"] = "user", ["content"] = message } },
                ["max_tokens"] = settings.MaxTokens,
                ["temperature"] = 0.8,
                ["seed"] = seed % (1UL << 53),
                ["ignore_eos"] = true,
                ["stream"] = true,
                ["stream_options"] = new Dictionary<string, bool> { ["include_usage"] = true },
            });
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            request.Headers.Add("X-Conversation-Id", conversation ?? "new");
            var sent = Stopwatch.GetTimestamp();
            HttpResponseMessage response;
            try { response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead); }
            catch (Exception e)
            {
                Fail($"transport: {e.GetType().Name}");
                return (false, conversation, null, null);
            }
            using (response)
            {
                var id = response.Headers.TryGetValues("X-Conversation-Id", out var ids) ? ids.FirstOrDefault() : null;
                if ((int)response.StatusCode != 200)
                {
                    var code = "";
                    try { code = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString() ?? ""; }
                    catch (Exception) { code = "no OpenAI error body"; }
                    Fail($"http {(int)response.StatusCode} {code}");
                    return (false, conversation ?? id, null, response.Headers.RetryAfter?.Delta);
                }
                if (conversation is null && id is null)
                {
                    Fail("stream: no X-Conversation-Id for a new conversation");
                    return (false, null, null, null);
                }
                try
                {
                    var (problem, text, first, last) = await ReadStreamAsync(response);
                    if (problem is not null)
                    {
                        Fail(problem);
                        return (false, conversation ?? id, null, null);
                    }
                    var ttft = Stopwatch.GetElapsedTime(sent, first).TotalMilliseconds;
                    var itl = Stopwatch.GetElapsedTime(first, last).TotalMilliseconds / (settings.MaxTokens - 1);
                    Record(w =>
                    {
                        w.TurnsOk++;
                        w.Tokens += settings.MaxTokens;
                        w.Ttft.Add(ttft);
                        w.Itl.Add(itl);
                    });
                    return (true, conversation ?? id, text, null);
                }
                catch (Exception e)
                {
                    Fail($"stream broken: {e.GetType().Name}");
                    return (false, conversation ?? id, null, null);
                }
            }
        }

        void Fail(string type)
        {
            Error(type);
            Record(w => w.TurnsFailed++);
        }

        /// <summary>Reads a streamed reply to its end; the first thing wrong with it (null: nothing), its text and when its first and last text came.</summary>
        async Task<(string? Problem, string Text, long First, long Last)> ReadStreamAsync(HttpResponseMessage response)
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var text = new StringBuilder();
            long first = 0, last = 0;
            string? replyId = null, finish = null;
            var events = 0;
            var done = false;
            int? completionTokens = null;
            while (await reader.ReadLineAsync() is { } line)
            {
                if (line.Length == 0 || line.StartsWith(':')) continue;
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) return ("stream: a line that is not a data event", "", 0, 0);
                if (done) return ("stream: an event after [DONE]", "", 0, 0);
                var data = line["data: ".Length..];
                if (data == "[DONE]")
                {
                    done = true;
                    continue;
                }
                using var doc = JsonDocument.Parse(data);
                var e = doc.RootElement;
                if (e.TryGetProperty("error", out var error))
                    return ($"stream error event: {(error.TryGetProperty("code", out var c) ? c.GetString() : "?")}", "", 0, 0);
                var id = e.GetProperty("id").GetString();
                if (replyId is null) replyId = id;
                else if (id != replyId) return ("stream: events of two replies", "", 0, 0);
                if (e.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                    completionTokens = usage.GetProperty("completion_tokens").GetInt32();
                foreach (var choice in e.GetProperty("choices").EnumerateArray())
                {
                    var delta = choice.GetProperty("delta");
                    if (events == 0 && !(delta.TryGetProperty("role", out var role) && role.GetString() == "assistant"))
                        return ("stream: the first event has no assistant role", "", 0, 0);
                    if (delta.TryGetProperty("content", out var content) && content.GetString() is { Length: > 0 } piece)
                    {
                        if (finish is not null) return ("stream: text after the finish reason", "", 0, 0);
                        last = Stopwatch.GetTimestamp();
                        if (first == 0) first = last;
                        text.Append(piece);
                    }
                    if (choice.GetProperty("finish_reason") is { ValueKind: JsonValueKind.String } f) finish = f.GetString();
                }
                events++;
            }
            if (!done) return ("stream: ended without [DONE]", "", 0, 0);
            if (finish != "length") return ($"stream: finish_reason {finish ?? "missing"}, not length", "", 0, 0);
            if (completionTokens != settings.MaxTokens) return ($"stream: usage.completion_tokens {completionTokens?.ToString(CultureInfo.InvariantCulture) ?? "missing"}, not max_tokens", "", 0, 0);
            if (first == 0) return ("stream: no text", "", 0, 0);
            return (null, text.ToString(), first, last);
        }

        /// <summary>The stored conversation must be exactly what its client sent and received.</summary>
        async Task VerifyHistoryAsync(string id, List<(string Role, string Content)> transcript)
        {
            for (var attempt = 0; ; attempt++)
            {
                try
                {
                    using var response = await http.GetAsync($"/v1/conversations/{id}");
                    if ((int)response.StatusCode != 200)
                    {
                        if (attempt < 20 && (int)response.StatusCode is 429 or 503)
                        {
                            await Task.Delay(response.Headers.RetryAfter?.Delta ?? TimeSpan.FromMilliseconds(500));
                            continue;
                        }
                        Error($"history: http {(int)response.StatusCode}");
                        Record(w => w.HistoryMismatches++);
                        return;
                    }
                    using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                    var stored = doc.RootElement.GetProperty("messages").EnumerateArray()
                        .Select(m => (Role: m.GetProperty("role").GetString()!, Content: m.GetProperty("content").GetString()!)).ToList();
                    if (stored.SequenceEqual(transcript)) Record(w => w.HistoriesVerified++);
                    else
                    {
                        Error("history mismatch");
                        Record(w => w.HistoryMismatches++);
                    }
                    return;
                }
                catch (Exception e) when (attempt < 20)
                {
                    if (attempt == 19) Error($"history: {e.GetType().Name}");
                    await Task.Delay(500);
                }
                catch (Exception e)
                {
                    Error($"history: {e.GetType().Name}");
                    Record(w => w.HistoryMismatches++);
                    return;
                }
            }
        }

        /// <summary>RSS of the watched processes now, in MB; processes found by command line join as they appear.</summary>
        Dictionary<int, double> SampleMemory()
        {
            var now = new Dictionary<int, double>();
            foreach (var (pid, label) in WatchedProcesses())
            {
                if (ReadRssMb(pid) is not { } rss) continue;
                now[pid] = rss;
                lock (_lock)
                {
                    if (!_memory.TryGetValue(pid, out var series)) _memory[pid] = series = (label, []);
                    series.RssMb.Add(rss);
                }
            }
            return now;
        }

        IEnumerable<(int Pid, string Label)> WatchedProcesses()
        {
            foreach (var pid in settings.WatchPids) yield return (pid, $"pid {pid}");
            if (!OperatingSystem.IsLinux()) yield break;
            // The cluster's own processes on this machine: who listens on the gateway's port and on its silos' ports.
            var ports = new List<(int Port, string What)> { (settings.Gateway.Port, "gateway") };
            ports.AddRange(SiloPorts().Select(p => (p, "silo")));
            var listeners = ListeningProcesses(ports.Select(p => p.Port).ToHashSet());
            foreach (var (port, what) in ports)
                if (listeners.TryGetValue(port, out var pid) && !settings.WatchPids.Contains(pid)) yield return (pid, $"{what} {pid}");
            if (settings.WatchNames.Length == 0) yield break;
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid == Environment.ProcessId) continue;
                if (settings.WatchPids.Contains(pid)) continue;
                string cmdline;
                try { cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' '); }
                catch (Exception) { continue; }
                if (settings.WatchNames.FirstOrDefault(n => cmdline.Contains(n, StringComparison.Ordinal)) is { } name)
                    yield return (pid, $"{name.Replace("OrleansMixtral.", "", StringComparison.Ordinal).ToLowerInvariant()} {pid}");
            }
        }

        /// <summary>The silo ports of the engines the gateway's /health lists (addresses "HOST:PORT@GENERATION").</summary>
        List<int> SiloPorts()
        {
            try
            {
                using var doc = JsonDocument.Parse(http.GetStringAsync("/health").WaitAsync(TimeSpan.FromSeconds(5)).GetAwaiter().GetResult());
                return [.. doc.RootElement.GetProperty("engines").EnumerateArray()
                    .Select(e => e.GetProperty("silo").GetString() ?? "")
                    .Select(s => s.Split('@')[0])
                    .Select(s => int.TryParse(s[(s.LastIndexOf(':') + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var p) ? p : 0)
                    .Where(p => p > 0)];
            }
            catch (Exception) { return []; }
        }

        /// <summary>For each of <paramref name="ports"/> that a process of this machine listens on (TCP), that process.</summary>
        static Dictionary<int, int> ListeningProcesses(HashSet<int> ports)
        {
            var inodes = new Dictionary<string, int>(); // socket inode → port
            foreach (var table in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
            {
                try
                {
                    foreach (var line in File.ReadLines(table).Skip(1))
                    {
                        var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                        if (f.Length < 10 || f[3] != "0A") continue; // LISTEN
                        var port = int.Parse(f[1][(f[1].LastIndexOf(':') + 1)..], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                        if (ports.Contains(port)) inodes[f[9]] = port;
                    }
                }
                catch (IOException) { }
            }
            var found = new Dictionary<int, int>();
            if (inodes.Count == 0) return found;
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) continue;
                try
                {
                    foreach (var fd in Directory.EnumerateFileSystemEntries(Path.Combine(dir, "fd")))
                    {
                        var target = new FileInfo(fd).LinkTarget;
                        if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal) && inodes.TryGetValue(target[8..^1], out var port))
                            found.TryAdd(port, pid);
                    }
                }
                catch (Exception) { } // gone, or not ours to read
            }
            return found;
        }

        static double? ReadRssMb(int pid)
        {
            try
            {
                foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                        return Math.Round(double.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024, 1);
            }
            catch (Exception) { }
            return null;
        }

        void Report(bool final)
        {
            Window w;
            lock (_lock)
            {
                w = _window;
                _window = new Window();
            }
            var rss = SampleMemory();
            var at = _clock.Elapsed;
            var ttft = Latency.Of(w.Ttft);
            var itl = Latency.Of(w.Itl);
            var errors = w.Errors.Count > 0 ? "; errors: " + string.Join(", ", w.Errors.Select(e => $"{e.Key} ×{e.Value}")) : "";
            var memory = string.Join(", ", rss.Select(r => string.Create(CultureInfo.InvariantCulture, $"{Label(r.Key)} {r.Value:F0} MB")));
            var line = string.Create(CultureInfo.InvariantCulture,
                $"[{at:hh\\:mm\\:ss}{(final ? " end" : "")}] turns {w.TurnsOk} ok, {w.TurnsFailed} failed; histories {w.HistoriesVerified} ok, {w.HistoryMismatches} wrong; " +
                $"TTFT p50 {F(ttft?.P50)} p99 {F(ttft?.P99)} ms; ITL p50 {F(itl?.P50)} p99 {F(itl?.P99)} ms; RSS {memory}{errors}");
            Console.WriteLine(line);
            var interval = new JsonObject
            {
                ["at_seconds"] = Math.Round(at.TotalSeconds, 1),
                ["final"] = final,
                ["turns_ok"] = w.TurnsOk,
                ["turns_failed"] = w.TurnsFailed,
                ["tokens"] = w.Tokens,
                ["conversations_done"] = w.Conversations,
                ["histories_verified"] = w.HistoriesVerified,
                ["history_mismatches"] = w.HistoryMismatches,
                ["errors"] = ErrorsJson(w.Errors),
                ["ttft_ms"] = LatencyJson(ttft),
                ["itl_ms"] = LatencyJson(itl),
                ["rss_mb"] = new JsonObject(rss.Select(r => KeyValuePair.Create(Label(r.Key), (JsonNode?)r.Value))),
            };
            lock (_lock) _intervals.Add(interval);
        }

        string Label(int pid)
        {
            lock (_lock) return _memory.TryGetValue(pid, out var s) ? s.Label : $"pid {pid}";
        }

        static string F(double? v) => v is { } x ? x.ToString("F1", CultureInfo.InvariantCulture) : "-";

        static JsonObject ErrorsJson(Dictionary<string, int> errors) =>
            new(errors.OrderByDescending(e => e.Value).Select(e => KeyValuePair.Create(e.Key, (JsonNode?)e.Value)));

        static JsonNode? LatencyJson(Latency? l) => l is null ? null : JsonSerializer.SerializeToNode(l, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower });

        /// <summary>Prints the run's totals (and writes the JSON); exit code 0 only when nothing failed.</summary>
        int Summarize()
        {
            var w = _total;
            var ttft = Latency.Of(w.Ttft);
            var itl = Latency.Of(w.Itl);
            var seconds = _clock.Elapsed.TotalSeconds;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"total: {w.TurnsOk} turns ok ({w.Tokens / seconds:F1} output tok/s), {w.TurnsFailed} failed; {w.Conversations} conversations, " +
                $"{w.HistoriesVerified} histories exact, {w.HistoryMismatches} wrong; TTFT p50 {F(ttft?.P50)} p90 {F(ttft?.P90)} p99 {F(ttft?.P99)} ms; " +
                $"ITL p50 {F(itl?.P50)} p99 {F(itl?.P99)} ms"));
            Console.WriteLine(w.Errors.Count == 0 ? "errors: none" : "errors: " + string.Join(", ", w.Errors.OrderByDescending(e => e.Value).Select(e => $"{e.Key} ×{e.Value}")));
            var memory = new JsonObject();
            foreach (var (pid, (label, series)) in _memory)
            {
                // Memory that levels off: the second half of the run adds (almost) nothing to what the first half reached.
                var half = series.Count / 2;
                var firstHalfPeak = series.Take(Math.Max(1, half)).Max();
                var secondHalfPeak = series.Skip(half).DefaultIfEmpty(firstHalfPeak).Max();
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"memory {label}: start {series[0]:F0} MB, end {series[^1]:F0} MB, peak {series.Max():F0} MB; second half's peak {secondHalfPeak - firstHalfPeak:+0;-0;0} MB over the first half's"));
                memory[label] = new JsonObject
                {
                    ["pid"] = pid,
                    ["rss_mb"] = new JsonArray([.. series.Select(v => (JsonNode?)v)]),
                    ["start_mb"] = series[0],
                    ["end_mb"] = series[^1],
                    ["peak_mb"] = series.Max(),
                    ["second_half_growth_mb"] = Math.Round(secondHalfPeak - firstHalfPeak, 1),
                };
            }
            if (settings.Json is { } path)
            {
                var json = new JsonObject
                {
                    ["settings"] = new JsonObject
                    {
                        ["gateway"] = settings.Gateway.ToString(),
                        ["model"] = model,
                        ["conversations"] = settings.Conversations,
                        ["duration_seconds"] = settings.Duration.TotalSeconds,
                        ["turns_per_conversation"] = settings.Turns,
                        ["max_tokens"] = settings.MaxTokens,
                        ["report_every_seconds"] = settings.ReportEvery.TotalSeconds,
                        ["seed"] = settings.Seed,
                    },
                    ["intervals"] = new JsonArray([.. _intervals.Select(i => (JsonNode?)i)]),
                    ["total"] = new JsonObject
                    {
                        ["seconds"] = Math.Round(seconds, 1),
                        ["turns_ok"] = w.TurnsOk,
                        ["turns_failed"] = w.TurnsFailed,
                        ["output_tokens_per_second"] = Math.Round(w.Tokens / seconds, 2),
                        ["conversations_done"] = w.Conversations,
                        ["histories_verified"] = w.HistoriesVerified,
                        ["history_mismatches"] = w.HistoryMismatches,
                        ["errors"] = ErrorsJson(w.Errors),
                        ["ttft_ms"] = LatencyJson(ttft),
                        ["itl_ms"] = LatencyJson(itl),
                    },
                    ["memory"] = memory,
                };
                File.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            }
            return w.TurnsFailed == 0 && w.HistoryMismatches == 0 && w.Errors.Count == 0 && w.TurnsOk > 0 ? 0 : 1;
        }
    }
}
