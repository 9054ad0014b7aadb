using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OrleansMixtral;
using OrleansMixtral.Client;
using OrleansMixtral.Engine;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;
using OrleansMixtral.LoadBench;
using OrleansMixtral.Tokenization;

// dotnet run -c Release --project src/OrleansMixtral.ClusterBench -- [--runs 12] [--tokens 128] [--prompt-words 80]
//     [--threads 0] [--model DIR | synthetic:mixtral-8x7b] [--one-silo]
// Load mode (LoadMode.cs), the same load as `mixtral bench --rate` through the Orleans client:
//     --rate R1,R2,... [--requests 200 | --duration S] [--prompt-tokens 512] [--output-tokens 128] [--seed 0]
//     [--json FILE] [--plot FILE.png] [--threads 0] [--model DIR | synthetic:mixtral-8x7b]
// Conversation mode (ConversationMode.cs), closed loop against a running cluster (e.g. the host launcher's silos):
//     --cluster HOST:PORT[,...] --concurrency C [--duration S] [--turns T] [--prompt-tokens N] [--output-tokens N]
//     [--kill-pid PID --kill-at S] [--json FILE]: throughput, TTFT, KV affinity of follow-up turns, a silo killed mid-load
// --one-silo: only the default silo settings (direct path, stream at 20 ms), and the in-process path uses that silo's
// engine, so the model is loaded once (the 8x7B on one GPU).
// The same turns (one at a time, greedy, fixed length) through: the engine in-process; a one-silo cluster (silo in this
// process, the client over the loopback gateway, as a remote client) on the direct path; and its token stream at two
// polling periods. Prints medians; per-turn overhead = what the caller saw minus what the engine measured for that turn.
// Soak mode (SoakMode.cs), through the OpenAI-compatible gateway: `soak --gateway URL --conversations N --duration 30m`,
// every stream and stored history checked, failures by type, TTFT/ITL and each process's RSS every minute, JSON.
if (SoakModeAsked(args)) return await RunSoakAsync(args);
if (ConversationModeAsked(args)) return await RunConversationsAsync(args);
if (LoadModeAsked(args)) return await RunLoadAsync(args);

var runs = Arg("--runs", 12);
var tokens = Arg("--tokens", 128);
var promptWords = Arg("--prompt-words", 80);
var threads = Arg("--threads", 0);
var model = ArgText("--model", "models/tiny-mixtral");
var oneSilo = args.Contains("--one-silo");
const int Warmup = 3;

var baseOptions = new MixtralSiloOptions { Model = model, Threads = threads, KvCacheMegabytes = 64 };
var turn = new SamplingOptions { MaxTokens = tokens, Temperature = 0, IgnoreEos = true };
string Message(int i) => $"Request {i}: " + string.Join(' ', Enumerable.Range(0, promptWords).Select(w => Words[(w * 7 + i) % Words.Length]));

Console.WriteLine($"cluster overhead benchmark: {model}, {runs} turns per path after {Warmup} warm-up, {tokens} tokens each, " +
                  $"prompt of {promptWords} words, {Environment.ProcessorCount} cores, engine threads {(threads > 0 ? threads : Environment.ProcessorCount)}");
// Every path is set up first; then run i goes through each path in turn (rotating the order), so that whatever else the
// machine does at the time weighs on all paths alike.
var clusters = new List<(string Label, bool Publish, IHost Silo, IHost ClientHost, MixtralClient Client)>();
var configurations = oneSilo
    ? new[] { ("defaults: stream on, 20 ms poll", true, 20, 4) }
    : new[]
    {
        ("stream off, every token sent alone", false, 5, 0),
        ("stream off", false, 5, 4),
        ("stream on, 5 ms poll", true, 5, 4),
        ("stream on, 20 ms poll", true, 20, 4),
        ("stream on, 100 ms poll", true, 100, 4),
    };
var configuration = 0;
foreach (var (label, publish, poll, interval) in configurations)
{
    var options = new MixtralSiloOptions
    {
        Model = model, Threads = threads, KvCacheMegabytes = 64, PublishTokenStream = publish,
        StreamPollMilliseconds = poll, StreamPublishIntervalMilliseconds = poll, DirectChunkIntervalMilliseconds = interval,
        Storage = ConversationStorageKind.Memory, // measures the token path; nothing to keep
    };
    var (silo, clientHost, client) = await StartOneSiloAsync($"bench-{configuration++}", options);
    clusters.Add((label, publish, silo, clientHost, client));
}
InferenceEngine engine;
MistralTokenizer tokenizer;
if (oneSilo)
{
    var host = clusters[0].Silo.Services.GetRequiredService<SiloEngineHost>();
    (engine, tokenizer) = (host.Engine, host.Tokenizer);
}
else (engine, tokenizer, _, _) = SiloEngineHost.CreateEngine(baseOptions);

var samples = new Dictionary<string, List<Sample>>();
void Add(string path, Sample sample)
{
    if (!samples.TryGetValue(path, out var list)) samples[path] = list = [];
    list.Add(sample);
}
var paths = clusters.Count + 1;
for (var i = 0; i < Warmup + runs; i++)
{
    for (var k = 0; k < paths; k++)
    {
        var p = (i + k) % paths;
        var message = Message(1000 + i * paths + p);
        if (p == 0)
        {
            var ids = tokenizer.EncodeChat([new ChatMessage(ChatRole.User, message)]);
            var started = Stopwatch.GetTimestamp();
            var stream = engine.Submit(new GenerationRequest(ids, new SamplingOptions { Temperature = 0, MaxTokens = tokens, IgnoreEos = true }));
            long first = 0, last = 0;
            var n = 0;
            await foreach (var t in stream.Tokens.ReadAllAsync())
            {
                if (t.TokenId < 0) continue;
                last = Stopwatch.GetTimestamp();
                if (n++ == 0) first = last;
            }
            var r = await stream.Completion;
            if (i >= Warmup) Add("in-process engine", new Sample(Ms(started, first), Ms(first, last), n, r.TimeToFirstToken.TotalMilliseconds, r.Elapsed.TotalMilliseconds));
            continue;
        }
        var (label, publish, _, _, client) = clusters[p - 1];
        var id = (await client.StartConversationAsync()).ConversationId;
        var watcher = new Watcher();
        IAsyncDisposable? subscription = publish ? await client.SubscribeAsync(id, watcher.On) : null;
        var begun = Stopwatch.GetTimestamp();
        long firstChunk = 0, lastChunk = 0;
        var count = 0;
        TurnEnd? end = null;
        await foreach (var chunk in client.SendAsync(id, message, turn))
        {
            if (chunk.TokenIds.Length > 0)
            {
                lastChunk = Stopwatch.GetTimestamp();
                if (count == 0) firstChunk = lastChunk;
                count += chunk.TokenIds.Length;
            }
            end = chunk.End ?? end;
        }
        if (end is not { Succeeded: true }) throw new InvalidOperationException("turn failed: " + end?.Error);
        if (subscription is not null)
        {
            await watcher.Done.Task.WaitAsync(TimeSpan.FromSeconds(30));
            await subscription.DisposeAsync();
        }
        if (i < Warmup) continue;
        Add($"cluster, direct path ({label})", new Sample(Ms(begun, firstChunk), Ms(firstChunk, lastChunk), count, end.EngineTtftMs, end.EngineElapsedMs));
        if (publish) Add($"cluster, stream subscriber ({label})", new Sample(Ms(begun, watcher.First), Ms(watcher.First, watcher.Last), watcher.Tokens, end.EngineTtftMs, end.EngineElapsedMs));
    }
}
foreach (var c in clusters)
{
    await c.ClientHost.StopAsync();
    await c.Silo.StopAsync();
}
if (!oneSilo) await engine.DisposeAsync(); // the silo's own engine went with the silo
var order = new[] { "in-process engine" }.Concat(clusters.SelectMany(c => c.Publish
    ? new[] { $"cluster, direct path ({c.Label})", $"cluster, stream subscriber ({c.Label})" }
    : [$"cluster, direct path ({c.Label})"]));
var results = order.Select(path => (Path: path, Samples: samples[path])).ToList();

var baseline = results[0].Samples;
double baseTtft = Median(baseline.Select(s => s.Ttft)), baseRate = Median(baseline.Select(s => s.Rate)), baseOverall = Median(baseline.Select(s => s.Overall));
Console.WriteLine();
Console.WriteLine("| path | TTFT p50 (ms) | TTFT p90 (ms) | added TTFT p50 (ms) | decode tok/s p50 | vs in-process | whole turn tok/s p50 | vs in-process |");
Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|");
foreach (var (path, list) in results)
{
    var ttft = Median(list.Select(s => s.Ttft));
    var p90 = Percentile(list.Select(s => s.Ttft), 0.9);
    var added = Median(list.Select(s => s.Ttft - s.EngineTtft));
    var rate = Median(list.Select(s => s.Rate));
    var overall = Median(list.Select(s => s.Overall));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"| {path} | {ttft:F2} | {p90:F2} | {added:F2} | {rate:F0} | {(rate / baseRate - 1) * 100:+0.0;-0.0}% | {overall:F0} | {(overall / baseOverall - 1) * 100:+0.0;-0.0}% |"));
}
Console.WriteLine();
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"in-process TTFT p50 {baseTtft:F2} ms; 'added TTFT' subtracts, turn by turn, the engine's own submit-to-first-token time, so it is the cost of the path alone."));
return 0;

int Arg(string name, int fallback) => int.TryParse(ArgText(name, null), out var v) ? v : fallback;
string ArgText(string name, string? fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback!;
}
static double Ms(long from, long to) => Stopwatch.GetElapsedTime(from, to).TotalMilliseconds;
static double Median(IEnumerable<double> values) => Percentiles.Of(values, 0.5);
static double Percentile(IEnumerable<double> values, double q) => Percentiles.Of(values, q);

/// <summary>One turn as the caller saw it: time to the first token, first-to-last token time, tokens; and the engine's own TTFT.</summary>
record Sample(double Ttft, double DecodeMs, int Tokens, double EngineTtft, double EngineElapsed)
{
    public double Rate => DecodeMs > 0 ? (Tokens - 1) / (DecodeMs / 1000) : 0;
    /// <summary>Tokens per second from the start of the turn to the last token (what a reader of the whole reply gets).</summary>
    public double Overall => (Ttft + DecodeMs) > 0 ? Tokens / ((Ttft + DecodeMs) / 1000) : 0;
}

sealed class Watcher
{
    public long First, Last;
    public int Tokens;
    public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task On(TokenChunk chunk)
    {
        if (chunk.TokenIds.Length > 0)
        {
            Last = Stopwatch.GetTimestamp();
            if (Tokens == 0) First = Last;
            Tokens += chunk.TokenIds.Length;
        }
        if (chunk.IsFinal) Done.TrySetResult();
        return Task.CompletedTask;
    }
}

partial class Program
{
    /// <summary>
    /// A one-silo cluster in this process (silo and gateway on free loopback ports) and an Orleans client connected through
    /// that gateway over TCP, as a remote client would be.
    /// </summary>
    static async Task<(IHost Silo, IHost ClientHost, MixtralClient Client)> StartOneSiloAsync(string name, MixtralSiloOptions options)
    {
        var (siloPort, gatewayPort) = (FreePort(), FreePort());
        var siloBuilder = Host.CreateApplicationBuilder();
        siloBuilder.Logging.SetMinimumLevel(LogLevel.Error);
        siloBuilder.UseOrleans(silo =>
        {
            silo.UseLocalhostClustering(siloPort, gatewayPort, serviceId: name, clusterId: name);
            silo.AddMixtral(options);
        });
        var silo = siloBuilder.Build();
        await silo.StartAsync();
        var clientHost = await ClusterConnection.ConnectAsync($"localhost:{gatewayPort}", clusterId: name, serviceId: name, logLevel: LogLevel.Error);
        return (silo, clientHost, clientHost.Services.GetRequiredService<MixtralClient>());
    }

    static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    static readonly string[] Words =
    [
        "the", "river", "ran", "past", "a", "small", "town", "where", "people", "told", "stories", "about", "old", "ships",
        "and", "winter", "nights", "when", "lights", "burned", "late", "in", "every", "window", "of", "the", "harbor",
    ];
}
