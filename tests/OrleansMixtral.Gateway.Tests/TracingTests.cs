using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Trace;
using OrleansMixtral.Engine;
using OrleansMixtral.Grains;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// One trace per request, from the HTTP request through the conversation grain and the engine grain to the engine's
/// steps: collected by an OpenTelemetry tracer over the sources the hosts export (<see cref="HostTelemetry.TraceSources"/>
/// and ASP.NET Core's), for a request that names its own parent (a W3C traceparent header, as a traced client sends).
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class TracingTests(GatewayFixture fixture, ITestOutputHelper output)
{
    [Fact(Timeout = 90_000)]
    public async Task A_conversation_turn_is_one_trace_from_the_http_request_to_the_engine_steps()
    {
        var spans = new List<Activity>();
        using var tracer = Sdk.CreateTracerProviderBuilder()
            .AddSource(HostTelemetry.TraceSources).AddAspNetCoreInstrumentation().AddInMemoryExporter(spans).Build();
        await fixture.EngineIdle();

        var traceId = ActivityTraceId.CreateRandom();
        var clientSpan = ActivitySpanId.CreateRandom();
        // a prompt no other test sent: the prefix cache cannot give it whole (the engine would then compute no prompt chunk)
        var request = fixture.Post("/v1/chat/completions",
            $$"""{"model":"tiny-mixtral","messages":[{"role":"user","content":"Tell me about the old city, {{traceId}}."}],"max_tokens":6,"temperature":0,"ignore_eos":true}""");
        request.Headers.Add("traceparent", $"00-{traceId}-{clientSpan}-01");
        request.Headers.Add(GatewayHost.ConversationHeader, "new");
        using var response = await fixture.Http.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, body);
        var usage = JsonDocument.Parse(body).RootElement.GetProperty("usage");
        var (promptTokens, completionTokens) = (usage.GetProperty("prompt_tokens").GetInt32(), usage.GetProperty("completion_tokens").GetInt32());
        var cached = usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32();
        Assert.Equal(6, completionTokens);

        // ASP.NET Core's span ends after the response is sent: the trace is complete when it is there
        List<Activity> trace = [];
        await GatewayFixture.Eventually(() =>
        {
            lock (spans) trace = [.. spans.Where(s => s.TraceId == traceId)];
            return trace.Any(s => s.Source.Name == "Microsoft.AspNetCore");
        }, "the HTTP request's span");
        var byId = trace.ToDictionary(s => s.SpanId);
        void Print(Activity s, int depth)
        {
            output.WriteLine($"{new string(' ', 2 * depth)}{s.DisplayName} [{s.Source.Name}, {s.Kind}] {s.Duration.TotalMilliseconds:F1} ms");
            foreach (var child in trace.Where(c => c.ParentSpanId == s.SpanId).OrderBy(c => c.StartTimeUtc)) Print(child, depth + 1);
        }
        foreach (var root in trace.Where(s => !byId.ContainsKey(s.ParentSpanId))) Print(root, 0);
        Activity One(string source, string name) => Assert.Single(trace, s => s.Source.Name == source && s.DisplayName == name);
        IEnumerable<Activity> Ancestors(Activity s)
        {
            while (byId.TryGetValue(s.ParentSpanId, out var parent)) yield return s = parent;
        }
        void Within(Activity child, Activity parent)
        {
            // a child's interval lies within its parent's (to the clock's millisecond)
            Assert.True(child.StartTimeUtc >= parent.StartTimeUtc.AddMilliseconds(-1), $"{child.DisplayName} starts before {parent.DisplayName}");
            Assert.True(child.StartTimeUtc + child.Duration <= parent.StartTimeUtc + parent.Duration + TimeSpan.FromMilliseconds(1),
                $"{child.DisplayName} ends after {parent.DisplayName}");
        }

        var http = Assert.Single(trace, s => s.Source.Name == "Microsoft.AspNetCore");
        Assert.Equal(clientSpan, http.ParentSpanId); // the client's span is its parent: the trace is the caller's
        Assert.Equal(ActivityKind.Server, http.Kind);
        Assert.Equal(200, http.GetTagItem("http.response.status_code"));
        var gateway = One(GatewayTracing.SourceName, GatewayTracing.GenerationSpan);
        Assert.Equal(http.SpanId, gateway.ParentSpanId);
        Assert.Equal("ok", gateway.GetTagItem("mixtral.outcome"));
        var turn = One(GrainTracing.SourceName, GrainTracing.TurnSpan);
        var engineGrain = One(GrainTracing.SourceName, GrainTracing.EngineGenerateSpan);
        var sequence = One(EngineTracing.SourceName, EngineTracing.SequenceSpan);

        // gateway → (Orleans' client and server spans of the grain call) → the turn → (the call) → the engine grain → the engine
        Assert.Contains(gateway, Ancestors(turn));
        Assert.Contains(turn, Ancestors(engineGrain));
        Assert.Equal(engineGrain.SpanId, sequence.ParentSpanId);
        foreach (var between in Ancestors(turn).TakeWhile(a => a != gateway).Concat(Ancestors(engineGrain).TakeWhile(a => a != turn)))
            Assert.StartsWith("Microsoft.Orleans", between.Source.Name);
        Assert.Contains(Ancestors(turn), a => a.Kind == ActivityKind.Client);
        Assert.Contains(Ancestors(turn), a => a.Kind == ActivityKind.Server);
        Within(gateway, http);
        Within(turn, gateway);
        Within(engineGrain, turn);
        Within(sequence, engineGrain);
        Assert.Equal(turn.GetTagItem("mixtral.conversation_id"), engineGrain.GetTagItem("mixtral.conversation_id"));

        // the engine's steps: the prompt's chunks compute what the prefix cache did not give, then one decode step per
        // token after the first (the last prompt chunk samples the first)
        var steps = trace.Where(s => s.ParentSpanId == sequence.SpanId).ToList();
        Assert.All(steps, s => Within(s, sequence));
        Assert.Single(steps, s => s.DisplayName == EngineTracing.QueueSpan);
        var chunks = steps.Where(s => s.DisplayName == EngineTracing.PromptChunkSpan).OrderBy(s => s.StartTimeUtc).ToList();
        Assert.NotEmpty(chunks);
        Assert.Equal(promptTokens - cached, chunks.Sum(c => (int)c.GetTagItem("mixtral.prompt.chunk_tokens")!));
        Assert.Equal(cached, (int)chunks[0].GetTagItem("mixtral.prompt.position")!);
        var decode = Assert.Single(steps, s => s.DisplayName == EngineTracing.DecodeSpan);
        Assert.Equal(completionTokens - 1, decode.GetTagItem("mixtral.decode.steps"));
        Assert.True(decode.StartTimeUtc >= chunks[^1].StartTimeUtc + chunks[^1].Duration - TimeSpan.FromMilliseconds(1), "decoding follows the prompt");
        Assert.Equal(promptTokens, sequence.GetTagItem("gen_ai.usage.input_tokens"));
        Assert.Equal(completionTokens, sequence.GetTagItem("gen_ai.usage.output_tokens"));
        Assert.Equal("length", sequence.GetTagItem("gen_ai.response.finish_reasons"));
        Assert.Equal(completionTokens, turn.GetTagItem("gen_ai.usage.output_tokens"));
    }

    [Fact]
    public void Tracing_is_on_only_with_an_exporter_configured_and_a_bad_endpoint_is_refused()
    {
        static (bool On, TracerProvider? Provider) Configure(Dictionary<string, string?> settings)
        {
            var services = new ServiceCollection();
            var on = HostTelemetry.AddTracing(services, new ConfigurationBuilder().AddInMemoryCollection(settings).Build(), "test");
            using var provider = services.BuildServiceProvider();
            return (on, provider.GetService<TracerProvider>());
        }
        Assert.Equal((false, null), Configure([]));
        Assert.Equal((false, null), Configure(new() { [HostTelemetry.ConsoleTracesKey] = "false" }));
        Assert.True(Configure(new() { [HostTelemetry.OtlpEndpointKey] = "http://127.0.0.1:4317" }) is (true, not null));
        Assert.True(Configure(new() { [HostTelemetry.ConsoleTracesKey] = "true" }) is (true, not null));
        Assert.Contains("OTEL_EXPORTER_OTLP_ENDPOINT must be an absolute URL",
            Assert.Throws<ArgumentException>(() => Configure(new() { [HostTelemetry.OtlpEndpointKey] = "collector:4317" })).Message);
        Assert.Contains("must be true or false", Assert.Throws<ArgumentException>(() => Configure(new() { [HostTelemetry.ConsoleTracesKey] = "yes" })).Message);
    }
}
