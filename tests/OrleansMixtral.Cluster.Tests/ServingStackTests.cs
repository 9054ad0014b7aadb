using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using OrleansMixtral.Client;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// The README's main job as a new user runs it: one silo host process serves the cluster, the OpenAI-compatible API,
/// /health and /metrics, prints its next steps as lines that work when copied (the chat command, a curl line, the
/// dashboard's and the other URLs), and logs one timestamped line per entry; docs/GATEWAY.md's conversation snippet runs
/// as written against it.
/// </summary>
public sealed class ServingStackTests(ITestOutputHelper output) : IDisposable
{
    readonly string _data = Path.Combine(Path.GetTempPath(), "mixtral-stack-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        try { Directory.Delete(_data, recursive: true); } catch (IOException) { }
    }

    static (int Code, string Out, string Err) Bash(string script, params (string Name, string Value)[] environment)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("set -euo pipefail\n" + script);
        foreach (var (name, value) in environment) psi.Environment[name] = value;
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEnd();
        process.WaitForExit(60_000);
        return (process.ExitCode, stdout.Result, stderr);
    }

    [Fact(Timeout = 180_000)]
    public async Task The_silo_serves_the_api_and_its_printed_next_steps_work_as_printed()
    {
        if (Bash("command -v curl").Code != 0) Assert.Skip("curl is not installed (the printed line is a curl command)");
        var (siloPort, gatewayPort) = (RedisServer.FreePort(), RedisServer.FreePort());
        await using var silo = SiloProcess.Start(["--Model", "models/tiny-mixtral", "--Mixtral:Threads", "1", "--Mixtral:KvCacheMegabytes", "16",
            "--DataDirectory", _data, "--PrimarySiloPort", $"{siloPort}"], siloPort, gatewayPort);
        try { await silo.Ready(TimeSpan.FromSeconds(60)); }
        catch { output.WriteLine(silo.Log); throw; }
        await Task.Delay(500); // the lines after the ready line
        var lines = silo.Log.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        output.WriteLine(silo.Log);

        // chat: the CLI project of this checkout, by its absolute path, at this silo's gateway port
        var chat = Regex.Match(lines.Single(l => l.TrimStart().StartsWith("chat:", StringComparison.Ordinal)),
            @"^\s*chat:\s+dotnet run --project (?<cli>\S+) -c Release -- chat --cluster (?<cluster>\S+)$");
        Assert.True(chat.Success, "the chat line");
        Assert.Equal(Path.Combine(RepoPaths.Root, "src", "OrleansMixtral.Cli"), chat.Groups["cli"].Value);
        Assert.Equal($"localhost:{gatewayPort}", chat.Groups["cluster"].Value);
        // what that command runs (ClusterChat, the CLI's chat --cluster), at that address: a reply
        var replies = new StringWriter();
        var notes = new StringWriter();
        Assert.Equal(ClusterChat.ExitOk, await ClusterChat.RunAsync(chat.Groups["cluster"].Value, null, null, SamplingOptions.Greedy(8),
            new StringReader("Hello\n"), replies, notes));
        Assert.False(string.IsNullOrWhiteSpace(replies.ToString()), notes.ToString());

        // the curl line, run as printed
        var curl = lines.Single(l => l.TrimStart().StartsWith("curl ", StringComparison.Ordinal)).Trim();
        var (code, json, err) = Bash(curl);
        Assert.True(code == 0, err);
        var reply = JsonDocument.Parse(json).RootElement;
        Assert.Equal("chat.completion", reply.GetProperty("object").GetString());
        Assert.InRange(reply.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), 1, 32);
        Assert.False(string.IsNullOrEmpty(reply.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()));

        // the URLs it prints answer: the dashboard, /health with the engine, /metrics with the engine's and the API's figures
        var urls = Regex.Matches(lines.Single(l => l.TrimStart().StartsWith("dashboard:", StringComparison.Ordinal)), @"(?<name>\w+):\s+(?<url>http\S+)")
            .ToDictionary(m => m.Groups["name"].Value, m => m.Groups["url"].Value);
        Assert.Equal(["dashboard", "health", "metrics", "engines"], urls.Keys);
        // traces are off until asked for, and the line says how
        Assert.Contains(lines, l => l.TrimStart().StartsWith("traces:     off: start with OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317", StringComparison.Ordinal));
        using var http = new HttpClient();
        Assert.True((await http.GetAsync(urls["dashboard"])).IsSuccessStatusCode);
        var health = JsonDocument.Parse(await http.GetStringAsync(urls["health"])).RootElement;
        Assert.Equal("ok", health.GetProperty("status").GetString());
        Assert.Equal(silo.SiloKey, health.GetProperty("engines")[0].GetProperty("silo").GetString());
        var metrics = await http.GetStringAsync(urls["metrics"]);
        Assert.Matches(@"(?m)^mixtral_engine_tokens_generated_tokens_total\{[^}]*\} [1-9]", metrics);
        Assert.Matches(@"(?m)^mixtral_gateway_requests_total\{[^}]*outcome=""ok""[^}]*\} 1", metrics);
        // the engine's histograms (the chat and the curl call: two requests at least), and tok/s to one decimal
        foreach (var histogram in new[] { "time_to_first_token_seconds", "queue_wait_seconds", "step_time_seconds", "tokens_per_step_tokens", "prompt_chunk_tokens" })
            Assert.Matches($@"(?m)^mixtral_engine_{histogram}_count\{{[^}}]*\}} [1-9]", metrics);
        Assert.Matches(@"(?m)^mixtral_engine_time_to_first_token_seconds_count\{[^}]*\} ([2-9]|\d\d)", metrics);
        Assert.Matches(@"(?m)^mixtral_engine_tokens_per_second\{[^}]*\} \d+(\.\d)?$", metrics);
        // docs/grafana's dashboard queries only metrics this scrape has (the gateway's, the engine's, ASP.NET Core's)
        var missing = GrafanaMetricNames().Except(ExportedMetricNames(metrics)).ToList();
        Assert.True(missing.Count == 0, "the Grafana dashboard queries metrics /metrics does not export: " + string.Join(", ", missing));

        // docs/GATEWAY.md's conversation, as written: it starts one, continues it by $ID and reads it back
        var doc = File.ReadAllText(Path.Combine(RepoPaths.Root, "docs", "GATEWAY.md"));
        var snippet = doc[doc.IndexOf("# a conversation:", StringComparison.Ordinal)..];
        snippet = snippet[..(snippet.IndexOf("curl -s $API/v1/conversations/$ID\n", StringComparison.Ordinal) + "curl -s $API/v1/conversations/$ID\n".Length)];
        var api = urls["health"][..^"/health".Length];
        var (snippetCode, snippetOut, snippetErr) = Bash(snippet, ("API", api));
        Assert.True(snippetCode == 0, snippetErr);
        var conversation = JsonDocument.Parse(snippetOut[snippetOut.LastIndexOf("{\"id\":\"conv", StringComparison.Ordinal)..]).RootElement;
        Assert.Equal(2, conversation.GetProperty("turns").GetInt32());
        Assert.Matches(@"^conversation conv\S+$", snippetOut.Split('\n')[0]);

        // logs: one line per entry, each with its UTC timestamp
        var entries = lines.Where(l => Regex.IsMatch(l, @"\b(info|warn|fail|crit): ")).ToArray();
        Assert.NotEmpty(entries);
        Assert.All(entries, l => Assert.Matches(@"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (info|warn|fail|crit): \S+\[\d+\] \S", l));
        Assert.Contains(entries, l => l.Contains("Engine ready: tiny-mixtral", StringComparison.Ordinal));
    }

    [Fact(Timeout = 180_000)]
    public async Task A_silo_with_console_traces_prints_a_requests_trace_from_the_http_request_to_the_engine()
    {
        var (siloPort, gatewayPort) = (RedisServer.FreePort(), RedisServer.FreePort());
        await using var silo = SiloProcess.Start(["--Model", "models/tiny-mixtral", "--Mixtral:Threads", "1", "--Mixtral:KvCacheMegabytes", "16",
            "--DataDirectory", _data, "--PrimarySiloPort", $"{siloPort}", "--Telemetry:ConsoleTraces", "true"], siloPort, gatewayPort);
        try { await silo.Ready(TimeSpan.FromSeconds(60)); }
        catch { output.WriteLine(silo.Log); throw; }
        await Task.Delay(500);
        Assert.Contains(silo.Log.Split('\n'), l => l.Trim() == "traces:     printed on the console (docs/GATEWAY.md, \"Traces\")");
        var api = Regex.Match(silo.Log, @"health:\s+(?<url>http\S+)/health").Groups["url"].Value;

        // a traced client's request (its span the parent), a conversation's first turn
        var traceId = ActivityTraceId.CreateRandom();
        var clientSpan = ActivitySpanId.CreateRandom();
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, api + "/v1/chat/completions")
        {
            Content = new StringContent($$"""{"model":"tiny-mixtral","messages":[{"role":"user","content":"The old city {{traceId}}"}],"max_tokens":4}""",
                System.Text.Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("traceparent", $"00-{traceId}-{clientSpan}-01");
        request.Headers.Add("X-Conversation-Id", "new");
        using var reply = await http.SendAsync(request);
        Assert.True(reply.IsSuccessStatusCode, await reply.Content.ReadAsStringAsync());

        // the console exporter's spans of that trace: name, source, span and parent ids
        List<(string Span, string Parent, string Name, string Source)> Spans() =>
        [
            .. silo.Log.Split("Activity.TraceId:").Skip(1)
                .Where(b => b.TrimStart().StartsWith(traceId.ToString(), StringComparison.Ordinal))
                .Select(b => (Regex.Match(b, @"Activity\.SpanId:\s+(\w+)").Groups[1].Value, Regex.Match(b, @"Activity\.ParentSpanId:\s+(\w+)").Groups[1].Value,
                    Regex.Match(b, @"Activity\.DisplayName:\s+([^\r\n]+)").Groups[1].Value.Trim(), Regex.Match(b, @"ActivitySource\):\s+Name:\s+(\S+)").Groups[1].Value))
                .Where(s => s.Item1.Length > 0), // a block the log has not finished writing
        ];
        var spans = Spans();
        for (var waited = 0; !spans.Any(s => s.Source == "Microsoft.AspNetCore") && waited < 100; waited++)
        {
            await Task.Delay(100);
            spans = Spans();
        }
        output.WriteLine(string.Join("\n", spans));
        var server = Assert.Single(spans, s => s.Source == "Microsoft.AspNetCore");
        Assert.Equal("POST /v1/chat/completions", server.Name);
        Assert.Equal(clientSpan.ToString(), server.Parent);
        var byId = spans.ToDictionary(s => s.Span);
        // the engine's steps, up their parents to the HTTP request: the turn and the engine grain on the way
        var chunk = spans.First(s => s.Name == "mixtral.engine.prompt_chunk");
        var path = new List<string>();
        for (var s = chunk; byId.TryGetValue(s.Parent, out var parent); s = parent) path.Add(parent.Name);
        Assert.Equal("POST /v1/chat/completions", path[^1]);
        foreach (var name in new[] { "mixtral.engine.sequence", "mixtral.engine_grain.generate", "mixtral.conversation.turn", "mixtral.gateway.generation" })
            Assert.Contains(name, path);
        // and nothing of Orleans' runtime (its stream polling and timers alone printed some 300 spans a second)
        Assert.DoesNotContain("Name: Microsoft.Orleans.Runtime", silo.Log);
        Assert.True(path.IndexOf("mixtral.engine.sequence") < path.IndexOf("mixtral.engine_grain.generate")
                    && path.IndexOf("mixtral.engine_grain.generate") < path.IndexOf("mixtral.conversation.turn")
                    && path.IndexOf("mixtral.conversation.turn") < path.IndexOf("mixtral.gateway.generation"), string.Join(" ← ", path));
    }

    /// <summary>The series names of a Prometheus text scrape (a histogram's _bucket, _sum and _count each).</summary>
    static HashSet<string> ExportedMetricNames(string scrape) =>
        [.. scrape.Split('\n').Where(l => l.Length > 0 && l[0] != '#').Select(l => Regex.Match(l, @"^[a-zA-Z_:][a-zA-Z0-9_:]*").Value)];

    static readonly HashSet<string> PromQlWords =
    [
        "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "label_values", "by", "without",
        "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "offset", "bool", "topk", "bottomk", "clamp_min",
    ];

    /// <summary>
    /// Every metric name the queries of docs/grafana/orleansmixtral.json name (panels' expressions and the variables'
    /// queries): what is left of an expression without its strings, label matchers, ranges, grouping labels, numbers,
    /// variables and PromQL's own words.
    /// </summary>
    static HashSet<string> GrafanaMetricNames()
    {
        var dashboard = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Root, "docs", "grafana", "orleansmixtral.json"))).RootElement;
        var queries = new List<string>();
        void Walk(JsonElement e)
        {
            if (e.ValueKind == JsonValueKind.Object)
                foreach (var p in e.EnumerateObject())
                {
                    if (p.Name is "expr" or "definition" && p.Value.ValueKind == JsonValueKind.String) queries.Add(p.Value.GetString()!);
                    else Walk(p.Value);
                }
            else if (e.ValueKind == JsonValueKind.Array)
                foreach (var item in e.EnumerateArray()) Walk(item);
        }
        Walk(dashboard);
        Assert.True(queries.Count >= 10, $"{queries.Count} queries in the dashboard");
        var names = new HashSet<string>();
        foreach (var query in queries)
        {
            var bare = Regex.Replace(query, @"""[^""]*""|\{[^}]*\}|\[[^\]]*\]|\b(by|without)\s*\([^)]*\)|\$\w+|\b\d+(\.\d+)?\b", " ");
            bare = Regex.Replace(bare, @"label_values\((\w+),\s*\w+\)", "$1"); // label_values(metric, label): the label is no metric
            var found = Regex.Matches(bare, @"[a-zA-Z_:][a-zA-Z0-9_:]*").Select(m => m.Value).Where(w => !PromQlWords.Contains(w)).ToList();
            Assert.True(found.Count > 0, $"no metric in '{query}'");
            names.UnionWith(found);
        }
        return names;
    }

    /// <summary>A program's output, or a failure naming what it printed; killed after <paramref name="seconds"/>.</summary>
    static async Task<string> RunAsync(string program, string[] arguments, double seconds)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        try { await process.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{program} did not finish within {seconds} s: {await stderr}");
        }
        Assert.True(process.ExitCode == 0, $"{program} exited with {process.ExitCode}: {await stderr}");
        return await stdout;
    }

    /// <summary>A latency as the engines page writes it (its rule: 2 decimals under 10 ms, 1 under 1 s, then seconds).</summary>
    static string PageMilliseconds(double ms) => ms < 10 ? $"{ms.ToString("F2", CultureInfo.InvariantCulture)} ms"
        : ms < 1000 ? $"{ms.ToString("F1", CultureInfo.InvariantCulture)} ms" : $"{(ms / 1000).ToString("F2", CultureInfo.InvariantCulture)} s";

    [Fact(Timeout = 180_000)]
    public async Task The_engines_page_shows_each_engine_as_a_browser_renders_it()
    {
        var chromium = Requirements.FindProgram("chromium");
        Requirements.Require(chromium is not null, "chromium is not installed (apt-get install chromium; test.sh installs it): the engines page is checked as a browser renders it");
        var (siloPort, gatewayPort) = (RedisServer.FreePort(), RedisServer.FreePort());
        await using var silo = SiloProcess.Start(["--Model", "models/tiny-mixtral", "--Mixtral:Threads", "1", "--Mixtral:KvCacheMegabytes", "16",
            "--DataDirectory", _data, "--PrimarySiloPort", $"{siloPort}"], siloPort, gatewayPort);
        try { await silo.Ready(TimeSpan.FromSeconds(60)); }
        catch { output.WriteLine(silo.Log); throw; }
        await Task.Delay(500);
        // the engines page as the silo prints it
        var page = Regex.Match(silo.Log, @"engines:\s+(?<url>http\S+)").Groups["url"].Value;
        Assert.EndsWith("/engines", page);
        using var http = new HttpClient();
        var api = page[..^"/engines".Length];
        for (var i = 0; i < 3; i++)
        {
            using var reply = await http.PostAsync(api + "/v1/completions", new StringContent(
                """{"model":"tiny-mixtral","prompt":"The old city","max_tokens":4,"temperature":0}""", System.Text.Encoding.UTF8, "application/json"));
            Assert.True(reply.IsSuccessStatusCode, await reply.Content.ReadAsStringAsync());
        }

        // scripts (Accept */*) get the JSON they always got
        var engine = Assert.Single(JsonDocument.Parse(await http.GetStringAsync(page)).RootElement.EnumerateArray());
        Assert.Equal(silo.SiloKey, engine.GetProperty("silo").GetString());
        var p50 = engine.GetProperty("timeToFirstTokenP50Ms").GetDouble();
        var p99 = engine.GetProperty("timeToFirstTokenP99Ms").GetDouble();
        Assert.InRange(p50, 0.01, 60_000);
        Assert.InRange(p99, p50, 60_000);
        var generated = engine.GetProperty("tokensGenerated").GetInt64();
        Assert.Equal(12, generated); // 3 requests x 4 tokens
        var kvTotal = engine.GetProperty("kvBlocksTotal").GetInt32();

        // a browser gets the page: what headless Chromium renders of it
        var dom = await RunAsync(chromium!, ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page], 90);
        output.WriteLine(dom);
        string Cell(string name) => Regex.Match(dom, $@"<td class=""{name}"">(?<v>[^<]*)").Groups["v"].Value;
        Assert.Contains("<h1>OrleansMixtral engines</h1>", dom);
        Assert.Contains($"data-silo=\"{silo.SiloKey}\"", dom);
        Assert.Contains("<td class=\"text model\">tiny-mixtral</td>", dom);
        Assert.Contains("<td class=\"text\">CPU</td>", dom);
        Assert.Equal("0", Cell("running"));
        Assert.Equal("0", Cell("queued"));
        Assert.Equal("12", Cell("tokens-generated"));
        Assert.Equal(PageMilliseconds(p50), Cell("ttft-p50"));
        Assert.Equal(PageMilliseconds(p99), Cell("ttft-p99"));
        Assert.Equal($"0 / {kvTotal.ToString("N0", CultureInfo.InvariantCulture)} (0.0 %)", Regex.Match(dom, @"<td class=""kv""[^>]*>(?<v>[^<]*)").Groups["v"].Value);
    }
}
