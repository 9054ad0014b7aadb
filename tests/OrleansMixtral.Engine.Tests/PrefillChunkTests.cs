using OrleansMixtral.Engine.Cpu;
using OrleansMixtral.Model;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Engine.Tests;

/// <summary>
/// Chunked prefill as one setting (<see cref="PrefillChunk"/>): the backend's forward size follows the chunk, the engine
/// computes prompts in chunks of it, and the chunk never changes the tokens.
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
        var result = await engine.Submit(new GenerationRequest(prompt, new SamplingParams { MaxTokens = tokens, IgnoreEos = true })).ReadToEndAsync();
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
        Assert.Equal((100, 164), (derived.PrefillChunkTokens, derived.MaxBatchTokens));
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
}
