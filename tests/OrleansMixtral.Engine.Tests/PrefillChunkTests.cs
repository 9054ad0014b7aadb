using System.Text.Json.Nodes;
using OrleansMixtral.Engine.Cpu;
using OrleansMixtral.Model;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Engine.Tests;

/// <summary>
/// Chunked prefill as one setting (<see cref="PrefillChunk"/>): the backend's forward size follows the chunk, the engine
/// computes prompts in chunks of it, and the chunk never changes the tokens. Long prompts (thousands of tokens) on the
/// tiny model with its context raised to 8192: they run, and requests that cannot fit are refused with typed errors.
/// </summary>
public sealed class PrefillChunkTests
{
    /// <summary>A backend that records the size of every forward call.</summary>
    sealed class Recording(CpuMixtralBackend inner) : IModelBackend
    {
        public List<int> Steps { get; } = [];
        public string Name => inner.Name;
        public MixtralConfig Config => inner.Config;
        public int KvBlockSize => inner.KvBlockSize;
        public int KvBlockCount => inner.KvBlockCount;
        public int MaxBatchTokens => inner.MaxBatchTokens;
        public int PrefillChunkTokens => inner.PrefillChunkTokens;
        public int MaxLogitRows => inner.MaxLogitRows;
        public RouterTrace? RouterTrace { get => inner.RouterTrace; set => inner.RouterTrace = value; }
        public void CopyKvBlock(int sourceBlock, int destinationBlock, int tokens) => inner.CopyKvBlock(sourceBlock, destinationBlock, tokens);
        public void Dispose() => inner.Dispose();

        public void Forward(ForwardBatch batch, Span<float> logits)
        {
            Steps.Add(batch.TokenCount);
            inner.Forward(batch, logits);
        }
    }

    /// <summary>The first <paramref name="tokens"/> ids of a long English text, BOS first.</summary>
    static int[] Prompt(int tokens)
    {
        var text = string.Concat(Enumerable.Range(0, tokens / 4).Select(i => $"In year {i} the river rose, and the town council met again. "));
        var ids = TinyModel.Tokenizer.Encode(text);
        Assert.True(ids.Length >= tokens, $"{ids.Length} tokens of text, {tokens} wanted");
        return ids[..tokens];
    }

    static CpuMixtralBackend Backend(string directory, CpuBackendOptions options)
    {
        using var checkpoint = CheckpointDirectory.Open(directory);
        return new CpuMixtralBackend(checkpoint, options);
    }

    static async Task<GenerationResult> Greedy(IModelBackend backend, int[] prompt, int tokens)
    {
        await using var engine = new InferenceEngine(backend, TinyModel.Tokenizer);
        var result = await engine.Submit(new GenerationRequest(prompt, new SamplingOptions { Temperature = 0, MaxTokens = tokens, IgnoreEos = true })).ReadToEndAsync();
        Assert.True(result.Error is null, result.Error);
        Assert.Equal(tokens, result.OutputTokens.Count);
        return result;
    }

    [Fact]
    public void The_forward_size_follows_the_chunk_unless_set_and_then_caps_it()
    {
        Assert.Equal(PrefillChunk.CpuDefault, new CpuBackendOptions().PrefillChunkTokens);
        Assert.Equal(PrefillChunk.CpuDefault + PrefillChunk.DecodeTokens, new CpuBackendOptions().MaxBatchTokens);
        Assert.Equal(100 + PrefillChunk.DecodeTokens, new CpuBackendOptions { PrefillChunkTokens = 100 }.MaxBatchTokens);
        Assert.Equal(300, (new CpuBackendOptions { MaxBatchTokens = 300 } with { PrefillChunkTokens = 100 }).MaxBatchTokens);

        using var derived = TinyModelBackend(new CpuBackendOptions { PrefillChunkTokens = 100 });
        Assert.Equal((100, 228), (derived.PrefillChunkTokens, derived.MaxBatchTokens)); // 100 + 128 decode tokens
        using var capped = TinyModelBackend(new CpuBackendOptions { PrefillChunkTokens = 100, MaxBatchTokens = 40 });
        Assert.Equal((40, 40), (capped.PrefillChunkTokens, capped.MaxBatchTokens));
    }

    static CpuMixtralBackend TinyModelBackend(CpuBackendOptions options) => Backend(RepoPaths.TinyModel, options with { KvCacheBytes = 16L << 20 });

    [Fact]
    public async Task A_prompt_longer_than_the_chunk_gives_the_same_greedy_tokens_with_chunks_of_16_64_and_512()
    {
        var prompt = Prompt(700);
        IReadOnlyList<int>? expected = null;
        foreach (var chunk in new[] { 16, 64, 512 })
        {
            var backend = new Recording(TinyModelBackend(new CpuBackendOptions { PrefillChunkTokens = chunk }));
            var result = await Greedy(backend, prompt, 16);
            // the prompt went in whole chunks (the last one shorter), then one token per decode step
            var promptSteps = (prompt.Length + chunk - 1) / chunk;
            Assert.Equal(Enumerable.Repeat(chunk, prompt.Length / chunk), backend.Steps.Take(prompt.Length / chunk));
            Assert.Equal(promptSteps + 15, backend.Steps.Count);
            if (expected is null) expected = result.OutputTokens;
            else Assert.Equal(expected, result.OutputTokens);
        }
    }

    /// <summary>The tiny model's weights with max_position_embeddings 8192 (RoPE is computed for any length), in a temp directory.</summary>
    static readonly Lazy<string> LongContextModel = new(() =>
    {
        var dir = Directory.CreateTempSubdirectory("om-tiny-8k-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, true); } catch (IOException) { } };
        foreach (var file in new[] { "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(RepoPaths.TinyModel, file), Path.Combine(dir, file));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(RepoPaths.TinyModel, "config.json")))!;
        config["max_position_embeddings"] = LongContext;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    });

    const int LongContext = 8192;

    /// <summary>K and V of every layer of one token, fp32, on the CPU backend.</summary>
    static long KvBytesPerToken(MixtralConfig c) => 2L * c.NumLayers * c.KvDim * sizeof(float);

    static CpuMixtralBackend LongContextBackend(int chunk, long kvTokens)
    {
        var config = MixtralConfig.Load(Path.Combine(LongContextModel.Value, "config.json"));
        Assert.Equal(LongContext, config.MaxPositionEmbeddings);
        return Backend(LongContextModel.Value, new CpuBackendOptions { PrefillChunkTokens = chunk, KvCacheBytes = kvTokens * KvBytesPerToken(config) });
    }

    [Fact]
    public async Task A_prompt_that_fills_the_context_is_an_invalid_request()
    {
        await using var engine = new InferenceEngine(LongContextBackend(512, LongContext + 16), TinyModel.Tokenizer);
        var e = Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest(Prompt(LongContext), SamplingOptions.Greedy(1))));
        Assert.Contains("context", e.Message);
        Assert.Equal(ErrorKind.ContextLengthExceeded, e.Kind);
        var bad = Assert.Throws<InvalidRequestException>(() => engine.Submit(new GenerationRequest(Prompt(16), new SamplingOptions { TopK = -1 })));
        Assert.Equal(ErrorKind.InvalidRequest, bad.Kind);
    }

    [Fact]
    public async Task A_prompt_that_fits_the_context_but_not_the_kv_cache_is_a_kv_capacity_error_and_the_engine_goes_on()
    {
        await using var engine = new InferenceEngine(LongContextBackend(512, 2048), TinyModel.Tokenizer);
        var e = Assert.Throws<KvCapacityException>(() => engine.Submit(new GenerationRequest(Prompt(3000), SamplingOptions.Greedy(1))));
        Assert.Contains("KV cache", e.Message);
        // a prompt that fits runs, over several chunks
        var ok = await engine.Submit(new GenerationRequest(Prompt(1500), SamplingOptions.Greedy(2))).ReadToEndAsync();
        Assert.Equal((FinishReason.Length, 2, 1500), (ok.FinishReason, ok.OutputTokens.Count, ok.Usage.PromptTokens));
    }

    [Fact]
    public async Task A_4000_token_prompt_gives_the_same_greedy_tokens_in_chunks_of_512_and_1536()
    {
        var prompt = Prompt(4000);
        var small = new Recording(LongContextBackend(512, LongContext + 16));
        var a = await Greedy(small, prompt, 8);
        var large = new Recording(LongContextBackend(1536, LongContext + 16));
        var b = await Greedy(large, prompt, 8);
        // 4000 = 7 × 512 + 416 = 2 × 1536 + 928; then 7 decode steps (the prompt's last chunk gives the first token)
        Assert.Equal([.. Enumerable.Repeat(512, 7), 416, .. Enumerable.Repeat(1, 7)], small.Steps);
        Assert.Equal([1536, 1536, 928, .. Enumerable.Repeat(1, 7)], large.Steps);
        Assert.Equal(a.OutputTokens, b.OutputTokens);
    }
}
