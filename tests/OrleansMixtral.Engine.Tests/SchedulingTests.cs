using OrleansMixtral.Tests;

namespace OrleansMixtral.Engine.Tests;

/// <summary>Continuous batching, cancellation, capacity limits and request validation.</summary>
public sealed class SchedulingTests
{
    static GenerationRequest Request(string text, int maxTokens, ulong? seed = null, float temperature = 0) =>
        new(TinyModel.Tokenizer.Encode(text), new SamplingOptions { MaxTokens = maxTokens, IgnoreEos = true, Seed = seed, Temperature = temperature });

    [Fact]
    public async Task Sequences_joining_mid_flight_get_the_same_tokens_as_alone()
    {
        const int tokens = 64;
        await using var engine = TinyModel.Engine();
        var texts = Enumerable.Range(0, 6).Select(i => $"Story number {i}: once upon a time there was a").ToArray();
        var alone = new List<IReadOnlyList<int>>();
        foreach (var t in texts) alone.Add((await engine.Submit(Request(t, tokens)).ReadToEndAsync()).OutputTokens);

        await using var fresh = TinyModel.Engine();
        var streams = new List<GenerationStream>();
        foreach (var t in texts)
        {
            var stream = fresh.Submit(Request(t, tokens));
            streams.Add(stream);
            // Each one is decoding (its first token is out, unread) before the next joins, and the first is still running
            // when each later one joins: they join mid-flight, not all at once nor one after another.
            Assert.True(await stream.Tokens.WaitToReadAsync());
            Assert.False(streams[0].Completion.IsCompleted, $"sequence 0 ended before sequence {streams.Count - 1} joined");
        }
        Assert.Equal(texts.Length, fresh.GetStats().Running); // all six in the running batch at once
        var together = await Task.WhenAll(streams.Select(s => s.ReadToEndAsync()));
        for (var i = 0; i < texts.Length; i++) Assert.Equal(alone[i], together[i].OutputTokens);
    }

    [Fact]
    public async Task Cancel_ends_the_stream_and_frees_its_kv_blocks()
    {
        await using var engine = TinyModel.Engine();
        var stream = engine.Submit(Request("A very long story begins here and goes on", 900));
        await foreach (var t in stream.Tokens.ReadAllAsync())
        {
            if (t.Index == 3) stream.Cancel();
        }
        var result = await stream.Completion;
        Assert.Equal(FinishReason.Cancelled, result.FinishReason);
        Assert.InRange(result.Usage.CompletionTokens, 4, 10);
        var stats = engine.GetStats();
        Assert.Equal(0, stats.Running);
        Assert.Equal(0, stats.KvBlocksUsed);
    }

    [Fact]
    public async Task Same_seed_same_sample_different_seed_differs()
    {
        await using var engine = TinyModel.Engine();
        var a = await engine.Submit(Request("The weather today", 24, seed: 7, temperature: 1)).ReadToEndAsync();
        var b = await engine.Submit(Request("The weather today", 24, seed: 7, temperature: 1)).ReadToEndAsync();
        var c = await engine.Submit(Request("The weather today", 24, seed: 8, temperature: 1)).ReadToEndAsync();
        Assert.Equal(a.OutputTokens, b.OutputTokens);
        Assert.NotEqual(a.OutputTokens, c.OutputTokens);
    }

    [Fact]
    public async Task Stop_string_cuts_the_output_before_it()
    {
        await using var engine = TinyModel.Engine();
        var free = await engine.Submit(Request("The committee said on Friday that the", 32)).ReadToEndAsync();
        // stop at the second word the model itself produces
        var words = free.Text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var stop = " " + words[1];
        var at = free.Text.IndexOf(stop, StringComparison.Ordinal);
        var pieces = new List<string>();
        var stopped = await engine.Submit(new GenerationRequest(TinyModel.Tokenizer.Encode("The committee said on Friday that the"),
            new SamplingOptions { Temperature = 0, MaxTokens = 32, StopStrings = [stop] })).ReadToEndAsync(t => pieces.Add(t.Text));
        Assert.Equal(FinishReason.Stop, stopped.FinishReason);
        Assert.Equal(free.Text[..at], stopped.Text);
        Assert.Equal(stopped.Text, string.Concat(pieces));
    }

    [Fact]
    public async Task Stop_tokens_end_generation_before_them()
    {
        await using var engine = TinyModel.Engine();
        var prompt = TinyModel.Tokenizer.Encode("Hello");
        // the model's own first greedy token as the stop token: it ends the reply at once
        var first = (await engine.Submit(new GenerationRequest(prompt, SamplingOptions.Greedy(1))).ReadToEndAsync()).OutputTokens[0];
        var r = await engine.Submit(new GenerationRequest(prompt, new SamplingOptions { Temperature = 0, MaxTokens = 8, StopTokens = [first] })).ReadToEndAsync();
        Assert.Equal(FinishReason.Stop, r.FinishReason);
        Assert.Empty(r.OutputTokens);
    }

    [Fact]
    public async Task Eos_ends_generation_with_stop_unless_ignored()
    {
        var prompt = TinyModel.Tokenizer.Encode("Hello");
        int first;
        await using (var plain = TinyModel.Engine())
            first = (await plain.Submit(new GenerationRequest(prompt, SamplingOptions.Greedy(1))).ReadToEndAsync()).OutputTokens[0];
        // The tiny model (trained on plain text) never samples its EOS: a copy of it whose config.json names the model's
        // own first greedy token as an EOS as well does, at once.
        var dir = Directory.CreateTempSubdirectory("mixtral-eos-").FullName;
        try
        {
            foreach (var file in Directory.GetFiles(RepoPaths.TinyModel))
                if (Path.GetFileName(file) != "config.json") File.CreateSymbolicLink(Path.Combine(dir, Path.GetFileName(file)), file);
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(RepoPaths.TinyModel, "config.json")))!;
            config["eos_token_id"] = new System.Text.Json.Nodes.JsonArray(2, first);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            using var checkpoint = Model.CheckpointDirectory.Open(dir);
            await using var engine = new InferenceEngine(new Cpu.CpuMixtralBackend(checkpoint, new Cpu.CpuBackendOptions { KvCacheBytes = 16L << 20 }), TinyModel.Tokenizer);

            var stopped = await engine.Submit(new GenerationRequest(prompt, SamplingOptions.Greedy(8))).ReadToEndAsync();
            Assert.Equal(FinishReason.Stop, stopped.FinishReason);
            Assert.Empty(stopped.OutputTokens);

            var ignored = await engine.Submit(new GenerationRequest(prompt, new SamplingOptions { Temperature = 0, MaxTokens = 8, IgnoreEos = true })).ReadToEndAsync();
            Assert.Equal(FinishReason.Length, ignored.FinishReason);
            Assert.Equal(8, ignored.OutputTokens.Count);
            Assert.Equal(first, ignored.OutputTokens[0]); // the EOS was generated, and generation went on
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Bad_requests_are_refused_with_typed_errors()
    {
        await using var engine = TinyModel.Engine(kvBytes: 512 << 10); // 256 tokens of KV
        Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest([], SamplingOptions.Greedy(1))));
        Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest([1, 32000], SamplingOptions.Greedy(1))));
        Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest([1, -5], SamplingOptions.Greedy(1))));
        Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest(Enumerable.Repeat(1, 1024).ToArray(), SamplingOptions.Greedy(1))));
        Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest([1], new SamplingOptions { Temperature = -1 })));
        Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest([1], new SamplingOptions { TopP = 1.5f })));
        Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest([1], new SamplingOptions { Temperature = 2.5f })));
        Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest([1], new SamplingOptions { Temperature = 0, MaxTokens = 0 })));
        Assert.Throws<KvCapacityException>(() => engine.Submit(new GenerationRequest([1, 2, 3], SamplingOptions.Greedy(300))));
        // the engine still serves after refusals
        var ok = await engine.Submit(new GenerationRequest([1, 415], SamplingOptions.Greedy(3))).ReadToEndAsync();
        Assert.Equal(3, ok.OutputTokens.Count);
        // top_p 0 keeps only the most likely token: greedy, whatever the temperature (as the HTTP API has it)
        var nucleus0 = await engine.Submit(new GenerationRequest([1, 415], new SamplingOptions { Temperature = 1.5f, TopP = 0, MaxTokens = 3 })).ReadToEndAsync();
        Assert.Equal(ok.OutputTokens, nucleus0.OutputTokens);
    }

    [Fact]
    public async Task A_full_queue_refuses_with_overloaded()
    {
        await using var engine = TinyModel.Engine(options: new EngineOptions { MaxWaiting = 2, MaxRunningSequences = 1 });
        var streams = new List<GenerationStream>();
        var refused = 0;
        for (var i = 0; i < 12; i++)
        {
            try { streams.Add(engine.Submit(Request("Count with me: one two three", 64))); }
            catch (EngineOverloadedException) { refused++; }
        }
        Assert.True(refused > 0);
        foreach (var s in streams) s.Cancel();
        await Task.WhenAll(streams.Select(s => s.Completion));
    }
}
