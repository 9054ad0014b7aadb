using System.Collections.Concurrent;

namespace OrleansMixtral.Engine.Tests;

/// <summary>
/// The scheduler's settings (<see cref="EngineOptions.PromptTokensWhileDecoding"/>, <see cref="EngineOptions.Admission"/>):
/// what each step may carry while sequences decode, and when a waiting request may start; neither changes a token.
/// </summary>
public sealed class StepBudgetTests
{
    sealed class Recorder : IEngineObserver
    {
        public readonly ConcurrentQueue<(int Tokens, int Sequences)> Steps = new();
        public readonly ConcurrentQueue<int> PromptChunks = new();
        public void Admitted(TimeSpan queueWait) { }
        public void FirstToken(TimeSpan timeToFirstToken) { }
        public void PromptChunk(int tokens) => PromptChunks.Enqueue(tokens);
        public void StepCompleted(TimeSpan duration, int tokens, int sequences) => Steps.Enqueue((tokens, sequences));
    }

    static SamplingOptions Greedy(int n) => new() { Temperature = 0, MaxTokens = n, IgnoreEos = true };

    static readonly int[] LongPrompt =
        TinyModel.Tokenizer.Encode(string.Concat(Enumerable.Repeat("The river rose and the town council met again. ", 30)))[..300];

    static readonly int[] ShortPrompt = TinyModel.Tokenizer.Encode("Once upon a time there");

    [Fact]
    public async Task While_a_sequence_decodes_a_step_carries_at_most_the_budget_of_prompt_tokens_and_the_same_tokens_come_out()
    {
        const int Budget = 32;
        var recorder = new Recorder();
        var backend = TinyModel.Backend(maxBatchTokens: 256);
        Assert.True(backend.PrefillChunkTokens > 2 * Budget, $"chunk {backend.PrefillChunkTokens}");
        await using var engine = new InferenceEngine(backend, TinyModel.Tokenizer,
            new EngineOptions { Observer = recorder, PromptTokensWhileDecoding = Budget });

        // a sequence decoding for a long while, then a 300-token prompt arrives beside it
        var decoding = engine.Submit(new GenerationRequest(ShortPrompt, Greedy(600)));
        var started = new TaskCompletionSource();
        var decoded = decoding.ReadToEndAsync(t => { if (t.Index == 3) started.TrySetResult(); });
        await started.Task;
        var stepsBefore = recorder.Steps.Count;
        var chunksBefore = recorder.PromptChunks.Count;
        var prompt = await engine.Submit(new GenerationRequest(LongPrompt, Greedy(8))).ReadToEndAsync();
        var first = await decoded;

        // the long prompt was computed in budget-sized pieces beside the decode: ⌈300 / 32⌉ = 10 of them
        var chunks = recorder.PromptChunks.Skip(chunksBefore).ToList();
        Assert.Equal(LongPrompt.Length, chunks.Sum());
        Assert.All(chunks, c => Assert.InRange(c, 1, Budget));
        Assert.Equal((LongPrompt.Length + Budget - 1) / Budget, chunks.Count);
        // and no step that carried both held more than the decode's token plus the budget
        Assert.All(recorder.Steps.Skip(stepsBefore).Where(s => s.Sequences == 2), s => Assert.InRange(s.Tokens, 2, 1 + Budget));

        // the same ids as each request alone on an engine with the default (a whole chunk)
        await using var plain = TinyModel.Engine();
        var alonePrompt = await plain.Submit(new GenerationRequest(LongPrompt, Greedy(8))).ReadToEndAsync();
        var aloneFirst = await plain.Submit(new GenerationRequest(ShortPrompt, Greedy(600))).ReadToEndAsync();
        Assert.Equal(alonePrompt.OutputTokens, prompt.OutputTokens);
        Assert.Equal(aloneFirst.OutputTokens, first.OutputTokens);
    }

    [Fact]
    public async Task With_nothing_decoding_a_prompt_takes_whole_chunks_whatever_the_budget()
    {
        var recorder = new Recorder();
        var backend = TinyModel.Backend(maxBatchTokens: 256);
        int chunk = backend.PrefillChunkTokens;
        await using var engine = new InferenceEngine(backend, TinyModel.Tokenizer,
            new EngineOptions { Observer = recorder, PromptTokensWhileDecoding = 16 });
        await engine.Submit(new GenerationRequest(LongPrompt, Greedy(4))).ReadToEndAsync();
        var expected = Enumerable.Repeat(chunk, LongPrompt.Length / chunk).Append(LongPrompt.Length % chunk).Where(c => c > 0);
        Assert.Equal(expected, recorder.PromptChunks);
    }

    [Fact]
    public void A_budget_below_the_smallest_chunk_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => new InferenceEngine(TinyModel.Backend(), TinyModel.Tokenizer,
            new EngineOptions { PromptTokensWhileDecoding = PrefillChunk.MinTokens - 1 }));
        Assert.Contains("at least 16", e.Message);
    }

    // 2 KiB a token on the CPU tiny model: 256 KiB = 128 tokens = 8 blocks of 16 (as KvPreemptionTests)
    const long EightBlocks = 256 << 10;

    [Fact]
    public async Task Guaranteed_no_evict_admits_only_what_can_grow_to_its_full_length_and_never_preempts()
    {
        int[][] prompts =
        [
            TinyModel.Tokenizer.Encode("The history of the city"),
            TinyModel.Tokenizer.Encode("Once upon a time there"),
            TinyModel.Tokenizer.Encode("The weather today is"),
            TinyModel.Tokenizer.Encode("In the beginning of the"),
        ];
        const int Output = 40; // 45-55 tokens = 3-4 blocks each at full length: two fit the 8 blocks at once
        await using var engine = TinyModel.Engine(kvBytes: EightBlocks, options: new EngineOptions { Admission = KvAdmission.GuaranteedNoEvict });
        var (results, mostRunning) = await TinyModel.WatchRunning(engine,
            () => Task.WhenAll(prompts.Select(p => engine.Submit(new GenerationRequest(p, Greedy(Output))).ReadToEndAsync())));

        var stats = engine.GetStats();
        Assert.Equal(0, stats.Preemptions);
        Assert.InRange(mostRunning, 1, 2);
        await using var roomy = TinyModel.Engine();
        for (var i = 0; i < prompts.Length; i++)
        {
            var alone = await roomy.Submit(new GenerationRequest(prompts[i], Greedy(Output))).ReadToEndAsync();
            Assert.Equal(FinishReason.Length, results[i].FinishReason);
            Assert.Equal(alone.OutputTokens, results[i].OutputTokens);
        }
    }
}
